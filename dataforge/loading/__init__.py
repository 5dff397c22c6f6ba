"""dataforge.loading: build_loader, Loader, device prefetch, worker seeding, statistics, builders."""

from dataforge.loading.builders import build_image_loaders, build_text_loaders
from dataforge.loading.loader import Loader, build_loader
from dataforge.loading.prefetch import DevicePrefetcher
from dataforge.loading.seeding import seed_worker
from dataforge.loading.stats import DataWaitMeter, Failure

__all__ = [
    "DataWaitMeter",
    "DevicePrefetcher",
    "Failure",
    "Loader",
    "build_image_loaders",
    "build_loader",
    "build_text_loaders",
    "seed_worker",
]
