from typing import Any

from django.core.management.base import BaseCommand, CommandError

from segmentation import model_runtime
from segmentation.sam.checkpoints import CheckpointUnavailable


class Command(BaseCommand):
    help = "Fetch and verify the configured model's checkpoint (with a progress bar) and export its ONNX decoder."

    def handle(self, *args: Any, **options: Any) -> None:
        spec = model_runtime.current_spec()
        try:
            path = model_runtime.checkpoint_path(progress=True)
        except CheckpointUnavailable as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"checkpoint for {spec.key}: {path}")
        self.stdout.write(f"ONNX decoder: {model_runtime.decoder_path()}")
