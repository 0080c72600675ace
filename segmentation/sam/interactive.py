"""The annotator's prompt rule, so the server can recompute a saved object from its prompts alone.

The annotator (static/js/chain.js) builds an object one prompt at a time and feeds each step's
low-res logits back into the next, as SAM's own interactive demo does. A saved mask keeps its points
in click order, its box and the candidate the user chose for the first click, and this module
replays them with exactly the annotator's rule:

1. the first step is the box alone (single-mask output, token 0) if there is a box; otherwise the
   first point alone with multimask output, candidates ordered best first by predicted IoU, and the
   chosen one is `candidate` (0 = the best; the annotator's Tab picks another);
2. every further point adds itself to all prompts so far (the box included) and passes the previous
   step's low-res logits as the mask prompt, with single-mask output. After the first step that is
   the chosen candidate's logits, so a click refines the mask the user sees.

A candidate other than 0 only exists for a first step without a box. A box drawn after some points
is still replayed first: the annotator recomputes its chain the same way whenever the box changes,
so the order in which prompts were made never matters beyond the order of the points.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .onnx_decoder import OnnxDecoder

CANDIDATES = 3  # multimask output of a single click


@dataclass(frozen=True)
class Step:
    mask: np.ndarray  # bool (H, W)
    score: float  # predicted IoU
    low_res: np.ndarray  # float32 (256, 256) logits, fed to the next step


def check_candidate(points: Sequence[Sequence[float]], box: Sequence[float] | None, candidate: int) -> None:
    """Raise ValueError unless `candidate` can be chosen for the first step of these prompts."""
    if not 0 <= candidate < CANDIDATES:
        raise ValueError(f"candidate must be 0 (the best), 1 or 2, not {candidate}")
    if candidate and (box is not None or not points):
        raise ValueError("a chain that starts with a box has a single mask, so candidate must be 0")


def steps(
    decoder: OnnxDecoder,
    *,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    points: Sequence[Sequence[float]],
    box: Sequence[float] | None = None,
    candidate: int = 0,
) -> Iterator[Step]:
    """Every step of the chain for points [[x, y, label], ...] (original pixels), an optional box and
    the first click's chosen candidate (0 = best)."""
    if not points and box is None:
        raise ValueError("give at least one point or a box")
    check_candidate(points, box, candidate)
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
        # Best first as the annotator lists them (a stable sort, as JavaScript's).
        pick = int(np.argsort(-result.scores, kind="stable")[candidate]) if multimask else 0
        previous = Step(
            mask=result.masks[pick],
            score=float(result.scores[pick]),
            low_res=result.low_res_logits[pick],
        )
        yield previous


def replay(
    decoder: OnnxDecoder,
    *,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    points: Sequence[Sequence[float]],
    box: Sequence[float] | None = None,
    candidate: int = 0,
) -> Step:
    """The object the annotator shows after these prompts: the last step of the chain."""
    *_, last = steps(decoder, embedding=embedding, orig_size=orig_size, points=points, box=box, candidate=candidate)
    return last
