from typing import Any

from django.core.management.base import BaseCommand, CommandError

from segmentation import model_runtime
from segmentation.sam.checkpoints import CheckpointUnavailable
from segmentation.sam.onnx_decoder import INTERACTIVE_GRAPHS


class Command(BaseCommand):
    help = "Fetch and verify the configured model's checkpoint (with a progress bar) and export its ONNX graphs."

    def handle(self, *args: Any, **options: Any) -> None:
        spec = model_runtime.current_spec()
        try:
            path = model_runtime.checkpoint_path(progress=True)
        except CheckpointUnavailable as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"checkpoint for {spec.key}: {path}")
        self.stdout.write(f"ONNX decoder: {model_runtime.decoder_path()}")
        # The browser's pair of graphs, so the first annotator page does not wait for an export.
        for graph in INTERACTIVE_GRAPHS:
            self.stdout.write(f"ONNX {graph} graph: {model_runtime.decoder_path(graph)}")
