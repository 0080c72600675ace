// The annotator's prompt rule. segmentation/sam/interactive.py replays the same rule on the server
// (`segment` with `replay: true`), so a saved object can be recomputed from its points and box:
// 1. the first step is the box alone (single mask) if there is a box, else the first point alone with
//    multimask output, candidates best first;
// 2. every further point adds itself to all prompts so far and feeds the previous step's best low-res
//    logits back as the mask prompt (single mask), as SAM's interactive demo does.
// Tab only changes which candidate of a single click is shown and saved, never what is fed back.

const samePoint = (a, b) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
const sameBox = (a, b) => (!a && !b) || (a && b && a.every((v, i) => v === b[i]));

// state: {points, box, candidates} (candidates from the chain's last step, best first).
// decode({points, box, maskInput, multimask}) -> {candidates}; firstStep, when given, is an already
// decoded first step for points[0] alone (the hover preview at that very spot).
export async function decodeChain(decode, previous, points, box, firstStep = null) {
  if (!points.length && !box) return { points, box, candidates: [] };
  const extends_ =
    previous && previous.candidates.length && sameBox(previous.box, box) &&
    points.length === previous.points.length + 1 && previous.points.every((p, i) => samePoint(p, points[i]));
  let candidates;
  let done;
  if (extends_) {
    candidates = previous.candidates;
    done = previous.points.length;
  } else if (box) {
    candidates = (await decode({ points: [], box, maskInput: null, multimask: false })).candidates;
    done = 0;
  } else {
    candidates = firstStep || (await decode({ points: points.slice(0, 1), box: null, maskInput: null, multimask: true })).candidates;
    done = 1;
  }
  for (let count = done + 1; count <= points.length; count++) {
    const maskInput = candidates[0].lowRes;
    candidates = (await decode({ points: points.slice(0, count), box, maskInput, multimask: false })).candidates;
  }
  return { points, box, candidates };
}
