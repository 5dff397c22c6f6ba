"""dataforge.loading: build_loader, Loader, device prefetch, worker seeding, statistics."""

from dataforge.loading.loader import Loader, build_loader
from dataforge.loading.prefetch import DevicePrefetcher
from dataforge.loading.seeding import seed_worker
from dataforge.loading.stats import DataWaitMeter, Failure

__all__ = ["DataWaitMeter", "DevicePrefetcher", "Failure", "Loader", "build_loader", "seed_worker"]
