"""The three DCMIF training stages. Each loads what the previous one wrote (``<out>/<stage>/final.pt``).

- ``jsrl``: the unfolded shared-dictionary learner on both modalities; finalises the dataset dictionary D.
- ``vgii``: RIN (and the FiLM heads Φγ, Φβ) with REN and D frozen. The first half of the steps trains RIN with
  identity FiLM (the first-pass pseudo-IR); then the prior backend reviews every training pair (features
  cached on disk) and the third quarter trains RIN together with the FiLM heads; for the last quarter RIN is
  frozen, the prior reviews the final first pass again, and the FiLM heads alone train on those features.
- ``afri``: the RFN gate with everything else frozen, against max-intensity/max-gradient targets built from the
  visible image and the pseudo-IR, as the paper writes (``--afri-target real_ir`` uses the real infrared, as the
  reference code does; measured here, the gate then collapses to the visible image: see docs/model.md).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dcmif_ros.inference.checkpoint import DCMIFBundle, save_bundle
from dcmif_ros.models.config import DCMIFConfig, get_config
from dcmif_ros.models.dcmif import DCMIFNet, FiLMHeads, dcmif_from_jsrl, ren_from_jsrl, with_fresh_gate
from dcmif_ros.models.dictionary import synthesize
from dcmif_ros.models.jsrl import JSRL
from dcmif_ros.image_codec import read_gray, read_image, to_uint8
from dcmif_ros.training.data import ImagePair, load_luminance
from dcmif_ros.training.loop import TrainConfig
from dcmif_ros.training.losses import (fine_detail, max_gradient_l1, max_intensity_l1, sobel_magnitude,
                                       thermal_region_l1, with_overrides)
from dcmif_ros.training.objects import (box_masks, crop_boxes, measurable, object_contrasts, objectness_target,
                                        read_boxes, warm_object_terms)


@dataclass(frozen=True)
class JSRLWeights:
    reconstruction: float = 1.0
    sparsity: float = 1e-3  # λ1 = λ2 of the paper's objective (ℓ1 on both coefficient maps)


@dataclass(frozen=True)
class VGIIWeights:
    image: float = 1.0  # l_int, image domain
    coefficients: float = 1.0  # l_int, coefficient domain (against the JSRL infrared coefficients)
    thermal_region: float = 1.0  # l_reg
    # l_grad (magnitudes: edge polarity flips between the bands); it pulls the pseudo-IR towards the visible
    # image's edges, the edge map users saw: weakened from the paper's 0.5 (docs/model.md, "Semantics")
    gradient: float = 0.1
    warm_inside: float = 2.0  # labelled objects: L1 to the real infrared inside each box
    warm_contrast: float = 6.0  # labelled objects: their contrast against a ring around them, as the real IR's
    objectness: float = 0.2  # the semantic branch's objectness head (BCE on the labelled boxes' cover)


SEMANTIC_LR_SCALE = 0.1  # the pretrained MobileNetV2 layers fine-tune at a tenth of --lr


@dataclass(frozen=True)
class AFRIWeights:
    intensity: float = 1.0
    gradient: float = 1.0
    # labelled objects: the fused image's contrast against a ring around each, as the real infrared's (the
    # max-intensity target adds a warm person only where the pseudo-IR is brighter than the visible image, so
    # by day the gate stayed closed on people the pseudo-IR showed warm); 0 is the paper's AFRI. Measured in
    # docs/model.md ("Semantics"): night people standing out in the fused image 22 % -> 29 %, by day 17 -> 43 %
    warm_contrast: float = 2.0
    # L1 between the fused and the visible image's fine detail (each minus its Gaussian blur): warmth may change
    # the low frequencies, not replace the visible edges with the pseudo-IR's softer ones; 0 is the paper's AFRI
    visible_detail: float = 0.0


STAGE_WEIGHTS = {"jsrl": JSRLWeights, "vgii": VGIIWeights, "afri": AFRIWeights}


def afri_losses(fused: torch.Tensor, visible: torch.Tensor, infrared: torch.Tensor, gate: torch.Tensor,
                weights: AFRIWeights) -> dict[str, torch.Tensor]:
    """AFRI's objective, max-intensity + max-gradient against (visible, infrared), with the mean gate logged;
    the dual-modal gate trains on it too."""
    terms = {"int": max_intensity_l1(fused, visible, infrared), "grad": max_gradient_l1(fused, visible, infrared)}
    return {"total": weights.intensity * terms["int"] + weights.gradient * terms["grad"], **terms,
            "gate": gate.mean().detach()}


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(prediction.clamp(0, 1), target).item()
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


WARM_QUANTILE = 0.9  # warm region: the hottest 10 % of the real infrared's pixels


def warm_contrast(image: torch.Tensor, infrared: torch.Tensor) -> float:
    """Mean of ``image`` over the real infrared's warm region minus its mean elsewhere: whether a pseudo-IR
    makes warm objects (people, engines) stand out as the real infrared does (its own value is the target)."""
    values = infrared.detach().cpu().numpy()
    warm = torch.from_numpy(values >= np.quantile(values, WARM_QUANTILE)).to(infrared.device)
    if warm.all():  # a uniform infrared has no warm region to stand out
        return 0.0
    return float(image[warm].mean() - image[~warm].mean())


def load_full_pair(pair: ImagePair, multiple: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole validation pair, cropped to a multiple of ``multiple`` (validation needs no padding logic)."""
    vis, ir = load_luminance(pair.visible_path), read_gray(pair.infrared_path)
    height, width = (vis.shape[0] // multiple) * multiple, (vis.shape[1] // multiple) * multiple
    to_tensor = lambda a: torch.from_numpy(a[:height, :width].copy()).float().div(255)[None, None].to(device)
    return to_tensor(vis), to_tensor(ir)


def full_frame_boxes(pair: ImagePair, size: tuple[int, int], device: str) -> torch.Tensor:
    """The labelled boxes of a whole validation pair (as ``load_full_pair`` crops it), (1, MAX_OBJECTS, 5)."""
    side = max(size)
    boxes = crop_boxes(read_boxes(pair.boxes_path), size, 0, 0, side, side, flip=False)
    return torch.from_numpy(boxes)[None].to(device)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """The first image of a batch (as ``load_full_pair`` gives them) as uint8 grey levels, for the metrics."""
    return to_uint8(image[0, 0].detach().cpu().numpy())


def load_stage_output(out: str | Path, stage: str) -> dict:
    path = Path(out) / stage / "final.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `dcmif train {stage}` with the same --out first")
    return torch.load(path, map_location="cpu", weights_only=False)


class JSRLStage:
    name = "jsrl"

    def __init__(self, config: TrainConfig, val_pairs: list[ImagePair], train_dataset):
        self.config, self.val_pairs, self.dataset = config, val_pairs, train_dataset
        self.model_config: DCMIFConfig = get_config(config.model)
        self.model = JSRL(self.model_config).to(config.device)
        self.initial_dictionary = self.model.dictionary_zero().detach().clone()
        self.weights = with_overrides(JSRLWeights(), config.extra.get("loss_weights"))

    def trainable(self):
        return list(self.model.parameters())

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "initial_dictionary": self.initial_dictionary}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.initial_dictionary = state["initial_dictionary"]

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        out = self.model(batch["vis"], batch["ir"])
        recon = F.l1_loss(out["recon_vis"], batch["vis"]) + F.l1_loss(out["recon_ir"], batch["ir"])
        sparsity = out["coef_vis"].abs().mean() + out["coef_ir"].abs().mean()
        total = self.weights.reconstruction * recon + self.weights.sparsity * sparsity
        return {"total": total, "recon": recon, "l1": sparsity}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        scores = {"psnr_vis": [], "psnr_ir": []}
        for pair in self.val_pairs[: self.config.val_images]:
            vis, ir = load_full_pair(pair, self.model_config.pad_multiple, self.config.device)
            out = self.model(vis, ir)
            scores["psnr_vis"].append(psnr(out["recon_vis"], vis))
            scores["psnr_ir"].append(psnr(out["recon_ir"], ir))
        self.model.train()
        drift = (self.model.dictionary_zero() - self.initial_dictionary).norm() / self.initial_dictionary.norm()
        return {**{k: round(float(np.mean(v)), 3) for k, v in scores.items()}, "d0_drift": round(float(drift), 4)}

    @torch.no_grad()
    def finalize(self) -> dict:
        """Solve the shared dictionary over (a bounded number of) training crops; validate with it."""
        self.model.eval()
        batches = (self.dataset[i] for i in range(min(len(self.dataset), 512)))
        pairs = ((b["vis"][None].to(self.config.device), b["ir"][None].to(self.config.device)) for b in batches)
        dictionary = self.model.dataset_dictionary(pairs)
        return {"stage": self.name, "model_config": self.model_config.to_dict(),
                "jsrl": self.model.state_dict(), "dictionary": dictionary.cpu(), "validation": self.validate()}


def jsrl_from_output(output: dict) -> tuple[JSRL, torch.Tensor]:
    jsrl = JSRL(DCMIFConfig.from_dict(output["model_config"]))
    jsrl.load_state_dict(output["jsrl"])
    return jsrl.eval(), output["dictionary"]


def first_pass_fingerprint(net: DCMIFNet) -> str:
    """Identifies the first-pass pseudo-IR a prior review describes: a hash of RIN's weights (REN and D are
    frozen in VGII and AFRI, so RIN alone decides it)."""
    digest = hashlib.sha1()
    for value in net.rin.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def review_first_pass(net: DCMIFNet, encoder, luminance: torch.Tensor, visible_path: Path) -> np.ndarray:
    """F_text for one pair: the prior's review of the visible image and its first-pass (identity FiLM)
    pseudo-IR, as the pipeline computes it on a refresh."""
    pseudo_ir = net.infer(luminance, *net.identity_film()).pseudo_ir
    pseudo = pseudo_ir[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)
    bgr = read_image(visible_path)[: pseudo.shape[0], : pseudo.shape[1]]
    return np.array(encoder.encode(bgr, pseudo).features, np.float32)


class PriorFeatureCache:
    """F_text for every training pair, computed by the prior backend and kept on disk, with the fingerprint
    of the first pass it reviewed (features of another RIN's pseudo-IR would train FiLM on the wrong input)."""

    def __init__(self, path: Path):
        self.path = path
        stored = torch.load(path) if path.exists() else {}
        if stored and "features" not in stored:  # written before fingerprints: features only, first pass unknown
            stored = {"features": stored}
        self.fingerprint: str | None = stored.get("fingerprint")
        self.features: dict[str, torch.Tensor] = stored.get("features", {})

    def ensure(self, pairs: list[ImagePair], net: DCMIFNet, encoder, current: bool = False) -> None:
        """Compute the missing features; with ``current``, first drop them all unless they describe ``net``."""
        fingerprint = first_pass_fingerprint(net)
        if current and self.fingerprint != fingerprint:
            self.features = {}
        missing = [p for p in pairs if p.name not in self.features]
        if not missing:
            return
        from tqdm import tqdm
        net.eval()
        for pair in tqdm(missing, desc=f"prior features ({encoder.encoder_id})"):
            vis, _ = load_full_pair(pair, net.config.pad_multiple, net.dictionary.device)
            self.features[pair.name] = torch.from_numpy(review_first_pass(net, encoder, vis, pair.visible_path))
        self.fingerprint = fingerprint
        tmp = self.path.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint, "features": self.features}, tmp)
        tmp.replace(self.path)

    def batch(self, pairs: list[ImagePair], indices: torch.Tensor, device: str) -> torch.Tensor:
        return torch.stack([self.features[pairs[int(i)].name] for i in indices]).to(device)


def prior_cache_path(out: str | Path, encoder_id: str) -> Path:
    digest = hashlib.sha1(encoder_id.encode()).hexdigest()[:10]
    return Path(out) / "vgii" / f"prior_features_{digest}.pt"


class VGIIStage:
    name = "vgii"

    def __init__(self, config: TrainConfig, val_pairs: list[ImagePair], train_pairs: list[ImagePair]):
        from dcmif_ros.prior import make_prior_encoder
        self.config, self.val_pairs, self.train_pairs = config, val_pairs, train_pairs
        jsrl, dictionary = jsrl_from_output(load_stage_output(config.out, "jsrl"))
        self.net = dcmif_from_jsrl(jsrl, dictionary, get_config(config.model)).to(config.device)
        semantic = self.net.rin.semantic
        if semantic is not None:
            semantic.load_pretrained()
        self.ir_encoder = ren_from_jsrl(jsrl, "ir").to(config.device)
        self.encoder = make_prior_encoder(config.prior)
        self.use_prior = not getattr(self.encoder, "is_identity", False)
        self.film = FiLMHeads(self.encoder.feature_dim, self.net.config.atoms).to(config.device)
        self.cache = PriorFeatureCache(prior_cache_path(config.out, self.encoder.encoder_id))
        never = config.steps + 1
        self.prior_from_step = max(1, config.steps // 2) if self.use_prior else never
        self.film_only_from_step = max(self.prior_from_step + 1, (3 * config.steps) // 4) if self.use_prior else never
        self.checked_final_features = False
        self.weights = with_overrides(VGIIWeights(), config.extra.get("loss_weights"))
        if config.extra.get("init"):
            self.start_from(Path(config.extra["init"]))

    def start_from(self, path: Path) -> None:
        """Fine-tune: RIN and FiLM weights from another VGII output (``final.pt``) or checkpoint (``last.pt``) where
        names and shapes match (the objectness head that a ``last.pt`` of a run before the head was part of RIN
        kept beside RIN becomes RIN's)."""
        if not path.is_file():
            raise FileNotFoundError(f"--init {path}: no such VGII output or checkpoint")
        previous = torch.load(path, map_location=self.config.device, weights_only=False)
        checkpoint = previous.get("stage")
        if isinstance(checkpoint, dict) and "rin" in checkpoint:  # a last.pt
            rin, film = dict(checkpoint["rin"]), checkpoint["film"]
            objectness = checkpoint.get("objectness", {})
        elif checkpoint == self.name:  # a final.pt
            rin = {k.removeprefix("rin."): v for k, v in previous["net"].items() if k.startswith("rin.")}
            film, objectness = previous["film"], {}
        elif isinstance(checkpoint, str):
            raise ValueError(f"--init {path} is a {checkpoint!r} output, not a vgii one")
        else:
            raise ValueError(f"--init {path} is neither a vgii final.pt nor a vgii last.pt")
        rin |= {f"semantic.objectness.{k}": v for k, v in objectness.items()}
        fresh = []
        for module, state in ((self.net.rin, rin), (self.film, film)):
            own = module.state_dict()
            fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            fresh += [k for k in own if k not in fitting]
            module.load_state_dict(fitting, strict=False)
        print(f"vgii: started from {path}; fresh: {', '.join(fresh) or 'none'}")

    def trainable(self) -> list[dict]:
        semantic = self.net.rin.semantic
        pretrained = [] if semantic is None else list(semantic.features.parameters())
        known = {id(p) for p in pretrained}
        fresh = [p for p in self.net.rin.parameters() if id(p) not in known]
        fresh += list(self.film.parameters())
        return [{"params": fresh}, {"params": pretrained, "lr_scale": SEMANTIC_LR_SCALE}]

    def state(self) -> dict:
        return {"rin": self.net.rin.state_dict(), "film": self.film.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.rin.load_state_dict(state["rin"])
        self.film.load_state_dict(state["film"])

    def film_for(self, batch: dict, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity FiLM, then RIN + FiLM on features of the first pass at ``prior_from_step``, then (RIN
        frozen) FiLM alone on features of the final first pass, so what FiLM learns from is what it will see."""
        if step < self.prior_from_step:
            return self.net.identity_film(batch["vis"].shape[0])
        film_only = step >= self.film_only_from_step
        if film_only:
            self.net.rin.requires_grad_(False)
        # Reviews of this very RIN at the phase starts (a cache from an earlier run is not reused), and once per
        # process in the FiLM-only phase, so a resume there also checks them. A resume inside the joint phase
        # keeps the cache as it is: the RIN it reviewed is no longer at hand.
        starts_phase = step in (self.prior_from_step, self.film_only_from_step)
        if starts_phase or not self.cache.features or (film_only and not self.checked_final_features):
            self.cache.ensure(self.train_pairs + self.val_pairs, self.net, self.encoder,
                              current=starts_phase or film_only)
            self.checked_final_features = film_only
            self.net.rin.train()
        return self.film(self.cache.batch(self.train_pairs, batch["index"], self.config.device))

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        vis, ir = batch["vis"], batch["ir"]
        gamma, beta = self.film_for(batch, step)
        with torch.no_grad():
            coef_vis = self.net.ren(vis)
            coef_ir = self.ir_encoder(ir)
        modulated = gamma[:, :, None, None] * coef_vis + beta[:, :, None, None]
        guide = self.net.rin.guide(vis)
        coef_pir = self.net.rin.guided(modulated, guide)
        pseudo_ir = synthesize(coef_pir, self.net.dictionary)
        masks = box_masks(batch["boxes"], *vis.shape[-2:])
        warm = warm_object_terms(pseudo_ir, ir, masks)
        terms = {
            "int": F.l1_loss(pseudo_ir, ir),
            "coef": F.l1_loss(coef_pir, coef_ir),
            "reg": thermal_region_l1(pseudo_ir, ir),
            "grad": F.l1_loss(sobel_magnitude(pseudo_ir), sobel_magnitude(vis)),
            "warm_in": warm["inside"],
            "warm_con": warm["contrast"],
        }
        w = self.weights
        total = (w.image * terms["int"] + w.coefficients * terms["coef"] + w.thermal_region * terms["reg"]
                 + w.gradient * terms["grad"] + w.warm_inside * terms["warm_in"] + w.warm_contrast * terms["warm_con"])
        semantic = self.net.rin.semantic
        if semantic is not None and semantic.objectness is not None:
            stride = self.net.config.rin.entry_stride
            target = objectness_target(masks[0], stride)
            per_pixel = F.binary_cross_entropy_with_logits(semantic.objectness(guide), target, reduction="none")
            labelled = batch["labelled"].to(per_pixel.dtype)  # an unlabelled folder's objects are unknown, not absent
            terms["obj"] = (per_pixel.mean(dim=(1, 2, 3)) * labelled).sum() / labelled.sum().clamp(min=1)
            total = total + w.objectness * terms["obj"]
        return {"total": total, **terms}

    def val_film(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_prior and pair.name in self.cache.features:
            return self.film(self.cache.features[pair.name][None].to(self.config.device))
        return self.net.identity_film()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.net.eval()
        scores = {"pir_psnr": [], "pir_l1": [], "vis_psnr": [], "pir_warm": [], "ir_warm": [], "pir_objects": [],
                  "ir_objects": []}
        for pair in self.val_pairs[: self.config.val_images]:
            vis, ir = load_full_pair(pair, self.net.config.pad_multiple, self.config.device)
            pseudo = self.net.infer(vis, *self.val_film(pair)).pseudo_ir.clamp(0, 1)
            scores["pir_psnr"].append(psnr(pseudo, ir))
            scores["pir_l1"].append(F.l1_loss(pseudo, ir).item())
            scores["vis_psnr"].append(psnr(vis, ir))
            scores["pir_warm"].append(warm_contrast(pseudo, ir))
            scores["ir_warm"].append(warm_contrast(ir, ir))
            boxes = full_frame_boxes(pair, vis.shape[-2:], self.config.device)
            masks = box_masks(boxes, *vis.shape[-2:])
            inside, ring, _ = masks
            usable = measurable(masks)[0]
            for name, image in (("pir_objects", pseudo), ("ir_objects", ir)):
                scores[name].extend(object_contrasts(image, inside, ring)[0][usable].tolist())
        self.net.rin.train()
        return {k: round(float(np.mean(v)), 4) if v else None for k, v in scores.items()}

    def finalize(self) -> dict:
        if self.use_prior:  # a no-op unless the run was too short for its FiLM-only phase
            self.cache.ensure(self.train_pairs + self.val_pairs, self.net, self.encoder, current=True)
        return {"stage": self.name, "model_config": self.net.config.to_dict(), "net": self.net.state_dict(),
                "film": self.film.state_dict(),
                "prior_encoder_id": self.encoder.encoder_id, "prior_feature_dim": self.encoder.feature_dim,
                "use_prior": self.use_prior, "prior_cache": str(self.cache.path),
                "prior_fingerprint": self.cache.fingerprint, "validation": self.validate()}


def vgii_from_run(out: str | Path) -> tuple[DCMIFNet, dict]:
    """The DCMIF network a run's VGII stage finished with, and that stage's output."""
    previous = load_stage_output(out, "vgii")
    # VGII outputs written before VGII took its shapes from --model have the JSRL stage's
    config = previous.get("model_config") or load_stage_output(out, "jsrl")["model_config"]
    net = DCMIFNet(DCMIFConfig.from_dict(config))
    net.load_state_dict(previous["net"])
    return net, previous


class AFRIStage:
    name = "afri"

    def __init__(self, config: TrainConfig, val_pairs: list[ImagePair], train_pairs: list[ImagePair]):
        from dcmif_ros.prior.factory import NONE_SPEC, parse_prior_spec

        self.config, self.val_pairs, self.train_pairs = config, val_pairs, train_pairs
        net, previous = vgii_from_run(config.out)
        preset = get_config(config.model)
        # how RFN fuses is AFRI's to choose (it trains RFN): --model's fusion, whatever VGII ran with
        preset.require_same(net.config, f"{config.out}/vgii/final.pt", ignore=frozenset({"fusion"}))
        self.net = with_fresh_gate(net, preset.fusion).to(config.device)
        self.film = FiLMHeads(previous["prior_feature_dim"], net.config.atoms).to(config.device)
        self.film.load_state_dict(previous["film"])
        self.previous = previous
        # `--prior none` trains the gate on the first-pass (identity FiLM) pseudo-IR, the paper's no-LLM
        # ablation, whatever prior VGII used
        use_prior = previous["use_prior"] and parse_prior_spec(config.prior).kind != NONE_SPEC
        self.cache = PriorFeatureCache(Path(previous["prior_cache"])) if use_prior else None
        if self.cache is not None and self.cache.fingerprint != first_pass_fingerprint(self.net):
            raise ValueError(f"{self.cache.path} holds prior reviews of another first pass than the VGII model "
                             f"in {config.out}/vgii/final.pt: run `dcmif train vgii` again with this --out")
        for module in (self.net.ren, self.net.rin, self.film):
            module.requires_grad_(False)
        self.weights = with_overrides(AFRIWeights(), config.extra.get("loss_weights"))
        self.target = config.extra.get("afri_target", "pseudo_ir")

    def trainable(self):
        return list(self.net.rfn.parameters())

    def state(self) -> dict:
        return {"rfn": self.net.rfn.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.rfn.load_state_dict(state["rfn"])

    def film_for_pairs(self, pairs: list[ImagePair], indices) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is None:
            return self.net.identity_film(len(indices))
        return self.film(self.cache.batch(pairs, indices, self.config.device))

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        vis = batch["vis"]
        gamma, beta = self.film_for_pairs(self.train_pairs, batch["index"])
        out = self.net.infer(vis, gamma, beta, linear_warmth=True)  # the gate learns from warmth of both signs
        infrared = batch["ir"] if self.target == "real_ir" else out.pseudo_ir.detach()
        losses = afri_losses(out.fused, vis, infrared, out.gate, self.weights)
        if self.weights.visible_detail:
            losses["detail"] = F.l1_loss(fine_detail(out.fused), fine_detail(vis))
            losses["total"] = losses["total"] + self.weights.visible_detail * losses["detail"]
        if self.weights.warm_contrast:
            masks = box_masks(batch["boxes"], *vis.shape[-2:])
            losses["warm_con"] = warm_object_terms(out.fused, batch["ir"], masks)["contrast"]
            losses["total"] = losses["total"] + self.weights.warm_contrast * losses["warm_con"]
        return losses

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        from dcmif_ros.evaluation.metrics import compute_metrics
        self.net.rfn.eval()
        rows = []
        for pair in self.val_pairs[: self.config.val_images]:
            vis, ir = load_full_pair(pair, self.net.config.pad_multiple, self.config.device)
            index = torch.tensor([self.val_pairs.index(pair)])
            out = self.net.infer(vis, *self.film_for_pairs(self.val_pairs, index))
            images = [tensor_to_uint8(t) for t in (vis, ir, out.fused)]
            rows.append(compute_metrics(*images, mode="gray", names=["AG", "EN", "SF", "EI", "MI", "SCD"]))
        self.net.rfn.train()
        return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}

    def finalize(self) -> dict:
        return {"stage": self.name, "model_config": self.net.config.to_dict(),
                "net": self.net.state_dict(), "film": self.film.state_dict(),
                "prior_encoder_id": self.previous["prior_encoder_id"],
                "prior_feature_dim": self.previous["prior_feature_dim"], "validation": self.validate()}


def bundle_from_afri(output: dict, metadata: dict) -> DCMIFBundle:
    config = DCMIFConfig.from_dict(output["model_config"])
    net = DCMIFNet(config)
    net.load_state_dict(output["net"])
    film = FiLMHeads(output["prior_feature_dim"], config.atoms)
    film.load_state_dict(output["film"])
    return DCMIFBundle(net.eval(), film.eval(), output["prior_encoder_id"], output["prior_feature_dim"], metadata)


def ship(out: str | Path, destination: str | Path, metadata: dict) -> Path:
    bundle = bundle_from_afri(load_stage_output(out, "afri"), metadata)
    save_bundle(destination, bundle)
    return Path(destination)
