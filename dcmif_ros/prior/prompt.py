"""The two prompt texts of DCMIF's language-model review, verbatim (reference code, design notes §5.3).

T1 introduces the visible image and T2 the synthetic infrared image; every backend uses them unchanged so
that features stay comparable with what the FiLM heads were trained on.
"""

VISIBLE_IMAGE_TEXT = "This is the original visible-light image."

SYNTHETIC_INFRARED_TEXT = (
    "This is a synthetic infrared image generated from the visible image. "
    "Please analyze how realistic this infrared image appears, and suggest what modifications are needed "
    "to make it more physically accurate. Focus on thermal distribution, contrast, and texture fidelity "
    "in regions such as people, vehicles, buildings, trees, and roads."
)
