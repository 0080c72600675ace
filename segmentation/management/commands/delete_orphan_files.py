from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from segmentation import services


class Command(BaseCommand):
    help = (
        "Delete stored images, thumbnails and embeddings that no row refers to (left by a process that "
        "died between writing a file and committing its row), once older than the grace period."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help="grace period: keep younger files, which may belong to an upload in flight "
            "(default: the ORPHAN_GRACE_SECONDS setting)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        if older_than is None:
            older_than = settings.ORPHAN_GRACE_SECONDS
        names = services.orphan_files_delete(older_than_seconds=older_than, dry_run=options["dry_run"])
        for name in names:
            self.stdout.write(name)
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {len(names)} orphaned files older than {older_than} s")
