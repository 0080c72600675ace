from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from segmentation import model_runtime
from segmentation.sam.build import build_model
from segmentation.sam.onnx_decoder import export_decoder


class Command(BaseCommand):
    help = "Export the configured model's prompt encoder + mask decoder as ONNX (the browser's decoder)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", type=Path, help="where to write it (default: the app's decoder cache)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["output"] is None:
            self.stdout.write(str(model_runtime.decoder_path()))
            return
        model = build_model(model_runtime.current_spec(), model_runtime.checkpoint_path(progress=True))
        export_decoder(model, options["output"])
        self.stdout.write(str(options["output"]))
