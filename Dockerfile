# One image for both roles: the web server (default command) and the GPU worker
# (`celery -A webapp worker -Q gpu --concurrency 1`, one per GPU; beat's sweeps need a worker on `default`).
FROM node:20-bookworm-slim AS frontend
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DATA_DIR=/data PORT=8000
WORKDIR /app
# The CUDA build of torch for the GPU worker (the pinned version, from PyTorch's CUDA wheel index);
# the rest of the pins come from pyproject.toml.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
COPY pyproject.toml ./
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && mkdir -p webapp segmentation && touch webapp/__init__.py segmentation/__init__.py \
 && pip install -e . && rm -rf webapp segmentation
COPY . .
# onnxruntime-web: the wasm build, and the WebGPU build for browsers with a GPU (as ORT_FILES in the Makefile).
COPY --from=frontend /app/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs \
     /app/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs \
     /app/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm \
     /app/node_modules/onnxruntime-web/dist/ort.webgpu.min.mjs \
     /app/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs \
     /app/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm \
     /app/static/vendor/ort/
RUN SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py prepare_model && daphne -b 0.0.0.0 -p ${PORT} webapp.asgi:application"]
