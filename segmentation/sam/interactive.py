"""The annotator's prompt rule, so the server can recompute a saved object from its prompts alone.

The annotator (static/js/annotator.js) builds an object one prompt at a time and feeds each step's
low-res logits back into the next, as SAM's own interactive demo does. A saved mask keeps its points
in click order and its box, and this module replays them with exactly the annotator's rule:

1. the first step is the box alone (single-mask output, token 0) if there is a box; otherwise the
   first point alone with multimask output, keeping the candidate with the highest predicted IoU;
2. every further point adds itself to all prompts so far (the box included) and passes the previous
   step's low-res logits as the mask prompt, with single-mask output.

A box drawn after some points is still replayed first: the annotator recomputes its chain the same
way whenever the box changes, so the order in which prompts were made never matters beyond the
order of the points.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .onnx_decoder import OnnxDecoder


@dataclass(frozen=True)
class Step:
    mask: np.ndarray  # bool (H, W)
    score: float  # predicted IoU
    low_res: np.ndarray  # float32 (256, 256) logits, fed to the next step


def steps(
    decoder: OnnxDecoder,
    *,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    points: Sequence[Sequence[float]],
    box: Sequence[float] | None = None,
) -> Iterator[Step]:
    """Every step of the chain for points [[x, y, label], ...] (original pixels) and an optional box."""
    if not points and box is None:
        raise ValueError("give at least one point or a box")
    box_array = None if box is None else np.asarray(box, dtype=np.float64)
    previous: Step | None = None
    # How many points each step uses: a box starts alone, then one more point per step.
    counts = ([] if box is None else [0]) + list(range(1, len(points) + 1))
    for count in counts:
        chosen = np.asarray(points[:count], dtype=np.float64).reshape(-1, 3)
        multimask = previous is None and box is None
        result = decoder.predict(
            embedding=embedding,
            orig_size=orig_size,
            points=chosen[:, :2] if count else None,
            labels=chosen[:, 2] if count else None,
            box=box_array,
            mask_input=None if previous is None else previous.low_res[None, None],
            multimask=multimask,
        )
        best = int(np.argmax(result.scores)) if multimask else 0
        previous = Step(
            mask=result.masks[best],
            score=float(result.scores[best]),
            low_res=result.low_res_logits[best],
        )
        yield previous


def replay(
    decoder: OnnxDecoder,
    *,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    points: Sequence[Sequence[float]],
    box: Sequence[float] | None = None,
) -> Step:
    """The object the annotator shows after these prompts: the last step of the chain."""
    *_, last = steps(decoder, embedding=embedding, orig_size=orig_size, points=points, box=box)
    return last
