"""Suite-wide settings.

One intra-op thread: the tests' models are tiny, so a second thread buys nothing, and when the
machine is busy OpenMP's spin-waiting threads make small ops up to 50x slower (measured: a tiny
BLIP caption call took 18 s with 2 threads under load, 0.3 s with 1). Subprocesses inherit the
environment variables. The hub is never contacted from tests.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402

TAESD_ENV = "GITD_TAESD"


@pytest.fixture(scope="session")
def taesd_dir():
    """The real TAESD (SD 1.x) weights folder, named only by $GITD_TAESD (CI points it at
    ../shared/weights/taesd-sd1 when that exists); tests that need real weights skip without."""
    from pathlib import Path

    value = os.environ.get(TAESD_ENV, "").strip()
    if not value:
        pytest.skip(f"real TAESD weights not given: set {TAESD_ENV} to the TAESD for SD 1.x "
                    "folder (diffusers layout of madebyollin/taesd, e.g. "
                    "../shared/weights/taesd-sd1)")
    folder = Path(value).expanduser()
    if not (folder / "config.json").is_file():
        pytest.skip(f"{TAESD_ENV}={value}: no such TAESD folder (config.json missing)")
    return folder


@pytest.fixture(scope="session")
def small_tiny_vae():
    """Factory of small random-weight ``AutoencoderTiny`` (TAESD's class, 8x downsampling, 4
    latent channels unless overridden); keyword arguments override its config."""
    def make(**config):
        import diffusers

        torch.manual_seed(0)
        return diffusers.AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), **config).eval()

    return make
