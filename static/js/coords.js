// The model's input frame: the image resized so its longest side is 1024, exactly as SAM's
// ResizeLongestSide computes it (per-axis scale, sizes rounded half up).

export const MODEL_SIZE = 1024;

export function inputSize(height, width) {
  const scale = MODEL_SIZE / Math.max(height, width);
  return [Math.floor(height * scale + 0.5), Math.floor(width * scale + 0.5)];
}

// [x, y] in original pixels -> [x, y] in the resized frame.
export function toModelFrame([x, y], height, width) {
  const [newH, newW] = inputSize(height, width);
  return [x * (newW / width), y * (newH / height)];
}
