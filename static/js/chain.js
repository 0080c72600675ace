// The annotator's prompt rule. segmentation/sam/interactive.py replays the same rule on the server
// (`segment` with `replay: true` and `candidate`), so a saved object can be recomputed from its points,
// its box and the first click's chosen candidate:
// 1. the first step is the box alone (single mask) if there is a box, else the first point alone with
//    multimask output, candidates best first, of which the user picks one with Tab (0 = the best);
// 2. every further point adds itself to all prompts so far and feeds the previous step's low-res
//    logits back as the mask prompt (single mask), as SAM's interactive demo does. After the first
//    step those are the chosen candidate's, so a click refines the mask the user sees.
// Only a first step without a box has candidates to choose from; otherwise the choice is 0.

const samePoint = (a, b) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
const sameBox = (a, b) => (!a && !b) || (a && b && a.every((v, i) => v === b[i]));

// The candidate a step shows, saves and feeds on: the chosen one where there are several (the
// multimask first step), else its only one.
const pick = (candidates, choice) => candidates[candidates.length > 1 ? choice : 0];

// state: {points, box, choice, candidates}: candidates from the chain's last step, best first; choice
// is the first step's chosen candidate.
export const EMPTY = Object.freeze({ points: [], box: null, choice: 0, candidates: [] });

export const shown = (state) => (state.candidates.length ? pick(state.candidates, state.choice) : null);

// The state with candidate `index` (cyclic) of its first step chosen, or null when that changes nothing.
// Only a single click has candidates to choose from: later steps were decoded from the choice.
export function choose(state, index) {
  const n = state.candidates.length;
  const choice = ((index % n) + n) % n;
  return n < 2 || choice === state.choice ? null : { ...state, choice };
}

// decode({points, box, maskInput, multimask}) -> {candidates}; firstStep, when given, is an already
// decoded first step for points[0] alone (the hover preview at that very spot).
export async function decodeChain(decode, previous, points, box, firstStep = null) {
  if (!points.length && !box) return EMPTY;
  const extends_ =
    previous && previous.candidates.length && sameBox(previous.box, box) &&
    points.length === previous.points.length + 1 && previous.points.every((p, i) => samePoint(p, points[i]));
  let candidates;
  let done;
  let choice = 0;
  if (extends_) {
    candidates = previous.candidates;
    choice = previous.choice;
    done = previous.points.length;
  } else if (box) {
    candidates = (await decode({ points: [], box, maskInput: null, multimask: false })).candidates;
    done = 0;
  } else {
    candidates = firstStep || (await decode({ points: points.slice(0, 1), box: null, maskInput: null, multimask: true })).candidates;
    done = 1;
  }
  for (let count = done + 1; count <= points.length; count++) {
    const maskInput = pick(candidates, choice).lowRes;
    candidates = (await decode({ points: points.slice(0, count), box, maskInput, multimask: false })).candidates;
  }
  return { points, box, choice, candidates };
}
