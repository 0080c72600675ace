"""Headers for static files: the decoder worker and onnxruntime's scripts run inside the annotator's
cross-origin isolated page (COOP/COEP, for wasm threads), so they declare themselves embeddable."""

from collections.abc import MutableMapping


def add_isolation_headers(headers: MutableMapping[str, str], path: str, url: str) -> None:
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if url.endswith((".js", ".mjs")):
        headers["Cross-Origin-Embedder-Policy"] = "require-corp"
