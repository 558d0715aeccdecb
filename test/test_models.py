"""The DCMIF networks: exact solves, gradients, identity initialisations, budgets of the tiny preset."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dcmif_ros.models import JSRL, DCMIFNet, FiLMHeads, get_config
from dcmif_ros.models.blocks import CoefficientBackbone, UNetLevel
from dcmif_ros.models.config import FUSION_GATE, FUSION_WARMTH, BackboneConfig, DCMIFConfig
from dcmif_ros.models.dcmif import (GATE_INITIAL_OPENING, RFN, WARMTH_REACH_CELLS, WHITE_MARGIN, OffsetGate,
                                   dcmif_from_jsrl, ren_from_jsrl, room_below_white, with_fresh_gate)
from dcmif_ros.models.dictionary import (
    DictionaryNormalEquations,
    adjoint_weight,
    block_kernel,
    blocked_correlate,
    circular_pad,
    coefficient_solve_fft,
    field_synthesis_weight,
    normalize_atoms,
    solver_filter,
    synthesize,
    synthesize_field,
    upsample_field,
)

TINY = get_config("tiny")
TINY_MAX_PARAMETERS = 1_500_000
# tiny is the CPU preset, and on the CPU the node processes frames at about 320x240 (issue 17's `auto`); the
# semantic branch (0.62 GFLOPs there) is most of the growth over the paper's RIN alone
TINY_MAX_GFLOPS_320x240 = 2.5


@pytest.fixture()
def dictionary() -> torch.Tensor:
    torch.manual_seed(1)
    return normalize_atoms(torch.randn(1, 8, 5, 5, dtype=torch.float64))


def test_adjoint_is_the_transpose_of_synthesis(dictionary):
    coefficients = torch.randn(2, 8, 20, 24, dtype=torch.float64)
    residual = torch.randn(2, 1, 20, 24, dtype=torch.float64)
    lhs = (synthesize(coefficients, dictionary) * residual).sum()
    rhs = (coefficients * synthesize_adjoint(residual, dictionary)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_fft_coefficient_solve_is_the_exact_minimiser(dictionary):
    """The gradient of ½‖y − D⋆x‖² + (a/2)‖x − x0‖² vanishes at the closed-form solution."""
    x0 = torch.randn(2, 8, 24, 30, dtype=torch.float64)
    image = torch.rand(2, 1, 24, 30, dtype=torch.float64)
    weight = torch.tensor(0.37, dtype=torch.float64)
    solution = coefficient_solve_fft(x0, image, dictionary, weight).requires_grad_()
    objective = 0.5 * ((image - synthesize(solution, dictionary)) ** 2).sum() + 0.5 * weight * ((solution - x0) ** 2).sum()
    (gradient,) = torch.autograd.grad(objective, solution)
    assert gradient.abs().max() < 1e-10
    # and it is not a trivial fixed point: the solve moved x0
    assert (solution - x0).abs().max() > 1e-2


def synthesize_adjoint(residual, dictionary):
    """Dᵀ r, the adjoint REN applies through ``adjoint_weight``."""
    return F.conv2d(circular_pad(residual, dictionary.shape[-1] // 2), adjoint_weight(dictionary))


def spatial_solve(x0, image, dictionary, kernel):
    """The CSB in real arithmetic, term by term: x0 + Dᵀ(h ⊛ (y − D⋆x0))."""
    residual = image - synthesize(x0, dictionary)
    filtered = F.conv2d(circular_pad(residual, kernel.shape[-1] // 2), kernel)
    return x0 + synthesize_adjoint(filtered, dictionary)


@pytest.mark.parametrize("height,width", [(72, 80), (97, 131)])
def test_spatial_solve_matches_fft_solve_up_to_the_recorded_truncation(height, width):
    """The FFT-free solve reproduces the FFT solve; the gap shrinks with the filter size."""
    torch.manual_seed(3)
    dictionary = normalize_atoms(torch.randn(1, TINY.atoms, 5, 5))
    weight = 1.0
    x0 = torch.randn(1, TINY.atoms, height, width)
    image = torch.rand(1, 1, height, width)
    exact = coefficient_solve_fft(x0, image, dictionary, torch.tensor(weight))
    errors = []
    for size in (15, TINY.solver_kernel_size, 45):
        kernel, tail = solver_filter(dictionary, weight, size)
        errors.append(float((exact - spatial_solve(x0, image, dictionary, kernel)).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 1e-3 * float(exact.abs().max())
    assert errors[2] < 1e-4 * float(exact.abs().max())


@pytest.mark.parametrize("size,factor", [(5, 4), (33, 4), (39, 4), (31, 2)])
def test_blocked_correlation_is_the_direct_correlation(size, factor):
    torch.manual_seed(size)
    kernel = torch.randn(1, 1, size, size, dtype=torch.float64)
    image = torch.rand(2, 1, 48, 64, dtype=torch.float64)
    direct = F.conv2d(circular_pad(image, size // 2), kernel)
    assert torch.allclose(blocked_correlate(image, block_kernel(kernel, factor)), direct, atol=1e-10)


@pytest.mark.parametrize("height,width", [(72, 80), (TINY.min_side, 2 * TINY.min_side)])
def test_ren_folded_solve_equals_the_term_by_term_solve(height, width):
    """REN's two-convolution solve is H⋆y + Dᵀ(h ⊛ (y − D⋆H⋆y)) up to the cropped tail of its kernel."""
    torch.manual_seed(4)
    jsrl = JSRL(TINY)
    with torch.no_grad():
        for head in jsrl.heads.values():
            head.conv.weight.normal_(std=0.1)
    ren = ren_from_jsrl(jsrl)
    image = torch.rand(2, 1, height, width)
    with torch.no_grad():
        reference = spatial_solve(ren.head(image), image, ren.dictionary, ren.solver_kernel)
        folded = ren.solve(image)
    assert (folded - reference).abs().max() < 1e-4 * reference.abs().max()
    with ren.frozen(), torch.no_grad():
        assert torch.equal(ren.solve(image), folded)
    assert 0.0 < ren.solve_truncation() < 1e-3


@pytest.mark.parametrize("stride", [2, 4])
def test_field_synthesis_is_the_synthesis_of_the_upsampled_field(stride):
    """D ⋆ up(X) from X's resolution: exact but for the atom-radius rim, where the full-resolution synthesis
    wraps around the frame and the field synthesis replicates the border cells."""
    torch.manual_seed(stride)
    dictionary = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    field = torch.randn(2, 16, 12, 15, dtype=torch.float64)
    direct = synthesize(upsample_field(field, stride), dictionary)
    low = synthesize_field(field, field_synthesis_weight(dictionary, stride))
    rim = dictionary.shape[-1] // 2
    assert low.shape == direct.shape
    assert torch.allclose(low[..., rim:-rim, rim:-rim], direct[..., rim:-rim, rim:-rim], atol=1e-10)
    assert not torch.allclose(low, direct, atol=1e-3)  # the rim does differ: the test can tell


@pytest.mark.parametrize("height,width", [(48, 64), (50, 66)])
def test_synthesis_on_pixel_blocks_is_the_direct_correlation(height, width):
    """Sizes that divide by SYNTHESIS_BLOCK take the strided, phase-laid-out form; the others the direct one."""
    torch.manual_seed(height)
    dictionary = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    coefficients = torch.randn(2, 16, height, width, dtype=torch.float64)
    direct = F.conv2d(circular_pad(coefficients, 2), dictionary)
    assert torch.allclose(synthesize(coefficients, dictionary), direct, atol=1e-10)


@pytest.mark.parametrize("smooth", [False, True])
def test_a_smooth_backbone_exit_leaves_no_block_edges(smooth):
    """One active low-resolution cell: the transposed exit writes a hard-edged 4×4 patch, the smooth exit a
    tent whose neighbouring pixels differ by under a third of its peak (bilinear ×4 steps: ¼ of the cell, whose
    peak pixel is ⅞ of it)."""
    torch.manual_seed(6)
    backbone = CoefficientBackbone(1, 1, BackboneConfig(width=4, smooth_exit=smooth))
    cell = torch.zeros(1, 4, 8, 8)
    cell[0, :, 4, 4] = 1.0
    with torch.no_grad():
        backbone.exit.bias.zero_() if not smooth else backbone.exit.project.bias.zero_()
        image = backbone.exit(cell)[0, 0].abs()
    steps = torch.cat([(image[1:] - image[:-1]).abs().flatten(), (image[:, 1:] - image[:, :-1]).abs().flatten()])
    assert image.shape == (32, 32)
    if smooth:
        assert steps.max() < image.max() / 3
        assert (image > 0).sum() > 16  # it spreads beyond its own cell
    else:
        assert (image > 0).sum() <= 16 and steps.max() > image.max() / 3


def test_rin_gain_starts_as_the_identity_and_can_remove_visible_detail():
    """S_pir = G ⊙ S + O: near the identity at initialisation; a closed gain leaves only the smooth offset, which
    is how RIN with a smooth exit takes out detail the infrared camera does not see."""
    torch.manual_seed(7)
    net = DCMIFNet(TINY)
    coefficients, luminance = torch.randn(1, TINY.atoms, 64, 64), torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert (net.rin(coefficients, luminance) - coefficients).abs().max() < 0.05
        bias = net.rin.backbone.exit.project.bias
        bias[: TINY.atoms] = -30.0  # gain 2σ(−30) ≈ 0
        bias[TINY.atoms :] = 0.5
        closed = net.rin(coefficients, luminance)
    assert (closed - 0.5).abs().max() < 0.05


def test_objectness_warms_rin_where_the_semantic_branch_finds_objects():
    """The objectness map (σ of the head's logits) times the learned warmth vector enters the offset field: with
    the map saturated at 1 the pseudo-IR coefficients move by exactly that vector; at 0 they do not move."""
    torch.manual_seed(8)
    net = DCMIFNet(TINY)
    coefficients, luminance = torch.randn(1, TINY.atoms, 64, 64), torch.rand(1, 1, 64, 64)
    warmth = torch.linspace(-0.5, 0.5, TINY.atoms)
    with torch.no_grad():
        cold = net.rin(coefficients, luminance)
        net.rin.warmth.copy_(warmth)
        head = net.rin.semantic.objectness
        head.weight.zero_()
        head.bias.fill_(-40.0)  # nothing found
        assert torch.allclose(net.rin(coefficients, luminance), cold, atol=1e-6)
        head.bias.fill_(40.0)  # an object everywhere
        warm = net.rin(coefficients, luminance)
    assert torch.allclose(warm - cold, warmth.reshape(1, -1, 1, 1).expand_as(cold), atol=1e-5)


def test_configs_written_before_smooth_exits_load_with_transposed_exits():
    old = TINY.to_dict()
    for key in ("coenet", "rin", "rfn"):
        del old[key]["smooth_exit"]
    del old["rin_gain"], old["semantic"]["objectness"], old["fusion"]
    loaded = DCMIFConfig.from_dict(old)
    assert not loaded.semantic.objectness
    assert not loaded.rin.smooth_exit and not loaded.rfn.smooth_exit and not loaded.rin_gain
    assert loaded.fusion == FUSION_GATE
    assert TINY.rin.smooth_exit and TINY.rfn.smooth_exit and not TINY.coenet.smooth_exit


def test_backbone_with_two_inputs_is_the_backbone_of_their_concatenation():
    torch.manual_seed(5)
    backbone = CoefficientBackbone(12, 4, BackboneConfig(width=8))
    a, b = torch.randn(1, 5, 32, 32), torch.randn(1, 7, 32, 32)
    assert torch.allclose(backbone(a, b), backbone(torch.cat([a, b], dim=1)), atol=1e-6)


def test_backbone_levels_halve_resolution_double_width_and_keep_two_level_parameter_names():
    shallow = BackboneConfig(width=8, blocks_per_level=(1, 1))
    deep = BackboneConfig(width=8, blocks_per_level=(1, 2, 1, 1))
    assert (shallow.deepest_stride, deep.deepest_stride) == (8, 32)
    backbone = CoefficientBackbone(3, 2, deep)
    seen = []
    level = backbone
    while isinstance(level.lower, UNetLevel):
        level = level.lower
    level.lower.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert backbone(torch.randn(2, 3, 128, 96)).shape == (2, 2, 128, 96)
    assert seen == [(2, 64, 4, 3)]  # the fourth level: 1/32 of the resolution, 8 × 2³ channels
    assert len(backbone.lower.upper) == 2
    names = list(CoefficientBackbone(2, 2, shallow).state_dict())
    assert {n.split(".")[0] for n in names} == {"entry", "upper", "down", "lower", "up", "merge", "exit"}
    assert "lower.0.body.0.weight" in names and not any(n.startswith("lower.lower") for n in names)
    assert names[0] == "entry.weight"  # the order the RIN fingerprint hashes, as before levels nested


def test_dictionary_solve_is_the_exact_minimiser(dictionary):
    coefficients = [torch.randn(2, 8, 18, 22, dtype=torch.float64) * 0.3 for _ in range(2)]
    images = [torch.rand(2, 1, 18, 22, dtype=torch.float64) for _ in range(2)]
    weight = torch.tensor(0.6, dtype=torch.float64)
    equations = DictionaryNormalEquations(8, 5, sample_stride=1)
    for s, y in zip(coefficients, images):
        equations.add(s, y)
    solution = equations.solve(dictionary, weight).requires_grad_()
    scale = weight * equations.equations / (8 * 25)
    objective = sum(0.5 * ((y - synthesize(s, solution)) ** 2).sum() for s, y in zip(coefficients, images))
    objective = objective + 0.5 * scale * ((solution - dictionary) ** 2).sum()
    (gradient,) = torch.autograd.grad(objective, solution)
    assert gradient.abs().max() < 1e-8


def test_every_jsrl_parameter_gets_gradient_and_the_dictionary_learns():
    torch.manual_seed(0)
    model = JSRL(TINY)
    start = model.dictionary_zero().detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    vis, ir = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    for step in range(3):
        out = model(vis, ir)
        loss = (out["recon_vis"] - vis).abs().mean() + (out["recon_ir"] - ir).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not silent, f"parameters without gradient: {silent}"
        optimizer.step()
    moved = (model.dictionary_zero() - start).norm() / start.norm()
    assert moved > 1e-3
    atom_norms = out["dictionary"].flatten(2).norm(dim=2)
    assert torch.allclose(atom_norms, torch.ones_like(atom_norms), atol=1e-5)


def test_film_heads_start_as_identity():
    heads = FiLMHeads(384, TINY.atoms)
    gamma, beta = heads(torch.randn(3, 384))
    assert torch.equal(gamma, torch.ones_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))


def test_gate_mixes_the_two_coefficient_maps():
    torch.manual_seed(0)
    jsrl = JSRL(TINY)
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach(), replace(TINY, fusion=FUSION_GATE)).eval()
    with torch.no_grad():
        image = torch.rand(1, 1, 64, 64)
        out = net.infer(image, *net.identity_film())
        coef_pseudo_ir = net.rin(out.coef_vis, image)
        weight, gate = net.rfn(out.coef_vis, coef_pseudo_ir)
        fused = synthesize(weight * coef_pseudo_ir + (1 - weight) * out.coef_vis, net.dictionary)
    # the smooth exit takes the mean over atoms at low resolution: the same as after upsampling (bilinear is linear)
    assert torch.allclose(gate, weight.mean(1, keepdim=True), atol=1e-6)
    assert out.gate.shape == (1, 1, 64, 64)
    assert 0.0 <= out.gate.min() and out.gate.max() <= 1.0
    assert torch.allclose(fused, out.fused, atol=1e-6)


def test_warmth_fusion_keeps_the_visible_image_and_adds_the_gated_warmth():
    """Gate closed: the fused image is the visible luminance exactly. Gate open: the luminance plus the positive
    part of D ⋆ up(O), RIN's offset field, away from the atom-radius rim where the field synthesis replicates
    instead of wrapping around. The visible coefficients reconstruct the luminance they encode."""
    torch.manual_seed(9)
    jsrl = JSRL(TINY)
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach()).eval()
    assert isinstance(net.rfn, OffsetGate)
    image = torch.rand(1, 1, 64, 64) * (1.0 - WHITE_MARGIN)  # room for warmth everywhere
    with torch.no_grad():
        net.rin.backbone.exit.project.weight[TINY.atoms :].normal_(std=0.5)  # an offset field that varies
        net.rfn.project.weight.zero_()
        net.rfn.project.bias.fill_(-40.0)
        closed = net.infer(image, *net.identity_film())
        net.rfn.project.bias.fill_(40.0)
        opened = net.infer(image, *net.identity_film())
        guide = net.rin.guide(image)
        _, offset = net.rin.fields(net.rin.features(closed.coef_vis, guide), guide)
        warmth = synthesize(upsample_field(offset, net.rin.stride), net.dictionary)
    assert torch.equal(closed.fused, image)
    rim = TINY.kernel_size // 2  # the visible coefficients encode the image, D ⋆ S̃_vis ≈ Y (a random JSRL: roughly)
    reconstruction = synthesize(closed.coef_vis, net.dictionary)
    assert (reconstruction - image)[..., rim:-rim, rim:-rim].abs().mean() < (image - image.mean()).abs().mean()
    assert closed.gate.max() < 1e-6 and opened.gate.min() > 1 - 1e-6
    assert torch.equal(opened.pseudo_ir, closed.pseudo_ir)  # the gate shapes the fused image only
    with torch.no_grad():
        coef_pseudo_ir = net.rin(closed.coef_vis, image)
    assert torch.allclose(closed.pseudo_ir[..., rim:-rim, rim:-rim],
                          synthesize(coef_pseudo_ir, net.dictionary)[..., rim:-rim, rim:-rim], atol=1e-5)
    assert (warmth < 0).any() and (warmth > 0.05).any()  # the test field both cools and warms
    assert (opened.fused >= image).all() and (opened.fused - image).abs().mean() > 0.02
    expected = image + warmth.clamp(min=0)
    assert torch.allclose(opened.fused[..., rim:-rim, rim:-rim], expected[..., rim:-rim, rim:-rim], atol=1e-5)


def test_warmth_has_no_room_within_its_reach_of_white():
    """Cells with white within the warmth's reach admit none of it (it would be clipped, flattening texture),
    cells whose surroundings stay WHITE_MARGIN below white admit all of it, and the fused image and gate map say
    so; the training rule (``linear_warmth``, the paper's D ⋆ S_f) admits the gated warmth of both signs
    everywhere."""
    stride = TINY.rin.entry_stride
    reach = WARMTH_REACH_CELLS * stride
    luminance = torch.full((1, 1, 8 * stride, 8 * stride), 0.2)
    luminance[..., 0, 0] = 1.0  # one white pixel in the first cell
    luminance[..., -stride:, -stride:] = 1.0 - WHITE_MARGIN / 2  # the last cell halfway into the margin
    room = room_below_white(luminance, stride)
    assert room.shape == (1, 1, 8, 8)
    near_white = torch.zeros(8, 8, dtype=torch.bool)
    near_white[: 1 + WARMTH_REACH_CELLS, : 1 + WARMTH_REACH_CELLS] = True
    assert (room[0, 0][near_white] == 0.0).all()
    assert room[0, 0, -1, -1] == pytest.approx(0.5) and room[0, 0, 3, 3] == 1.0

    torch.manual_seed(4)
    jsrl = JSRL(TINY)
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach()).eval()
    side, white_columns = 16 * stride, 8 * stride
    frame = torch.full((1, 1, side, side), 0.3)
    frame[..., :white_columns] = 1.0  # a white left half
    with torch.no_grad():
        net.rin.backbone.exit.project.weight[TINY.atoms :].normal_(std=0.5)  # an offset field that varies
        net.rfn.project.weight.zero_()
        net.rfn.project.bias.fill_(40.0)  # the gate wide open: what is admitted is the room alone
        out = net.infer(frame, *net.identity_film())
        linear = net.infer(frame, *net.identity_film(), linear_warmth=True)
    clear_of_white = white_columns + reach + stride
    assert (out.gate[..., : white_columns - stride] < 1e-6).all() and (out.gate[..., clear_of_white:] > 1 - 1e-6).all()
    assert torch.equal(out.fused[..., : white_columns - reach], frame[..., : white_columns - reach])
    assert (out.fused[..., clear_of_white:] > frame[..., clear_of_white:]).any()
    warmth = linear.fused - synthesize(linear.coef_vis, net.dictionary)  # the paper's D ⋆ S_f
    assert (warmth[..., : white_columns - reach] != 0).any() and (warmth < 0).any()  # both signs, everywhere
    assert (linear.gate > 1 - 1e-6).all()


def test_afri_starts_its_gate_afresh_and_a_warmth_gate_nearly_closed():
    net = DCMIFNet(replace(TINY, fusion=FUSION_GATE))
    drawn = net.rfn
    assert with_fresh_gate(net, FUSION_GATE) is net and isinstance(net.rfn, RFN) and net.rfn is not drawn
    with_fresh_gate(net, FUSION_WARMTH)
    assert net.config.fusion == FUSION_WARMTH and isinstance(net.rfn, OffsetGate)
    with torch.no_grad():
        gate = net.rfn(torch.randn(2, TINY.rin.width, 8, 8))
    assert torch.allclose(gate, torch.full_like(gate, GATE_INITIAL_OPENING), atol=0.01)


def test_fusion_is_checked_when_a_config_is_made():
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        replace(TINY, fusion="max")
    with pytest.raises(ValueError, match="needs rin_gain"):
        replace(TINY, rin_gain=False)


def test_tiny_preset_fits_the_cpu_budget():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    jsrl = JSRL(TINY)
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach())
    parameters = sum(p.numel() for p in net.parameters()) + sum(p.numel() for p in FiLMHeads(384, TINY.atoms).parameters())
    assert parameters <= TINY_MAX_PARAMETERS
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 1, 240, 320), *net.identity_film())
    assert counter.get_total_flops() / 1e9 <= TINY_MAX_GFLOPS_320x240


def test_base_preset_is_larger_than_tiny():
    base = DCMIFNet(get_config("base"))
    tiny = DCMIFNet(TINY)
    assert sum(p.numel() for p in base.parameters()) > 5 * sum(p.numel() for p in tiny.parameters())


def test_unknown_size_is_rejected_by_name():
    with pytest.raises(ValueError, match="huge"):
        get_config("huge")
