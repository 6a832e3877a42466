"""PhilEO Geo-Aware U-Net encoders (ESA Φ-lab), 10 Sentinel-2 bands.

The Geo-Aware U-Net of PhilEO Bench (Fibaek et al. 2024) and PhilEO-MajorTOM
(Dionelis et al. 2025) is a CNN whose *encoder* is pretrained with geo-aware targets
(location, climate zone, reconstruction) on PhilEO Globe, FastTOM or MajorTOM; the
U-Net's bridge and decoder are trained per downstream task. eoembed runs the
pretrained encoder only.

**Feature level.** The embedding is the encoder's last map: the output of the fourth
stage after its max-pool, at stride 16 (one vector per 16 × 16 pixels, 160 m at
10 m), with the stage's full width (640-d for Nano). It is the deepest *pretrained*
map, the one the geo-aware pretraining head average-pools, so it is the level the
pretraining shaped to describe a place; the shallower stages are narrower (80–320 d)
and mostly texture. ``patch_size=8`` takes the same stage before its max-pool
(stride 8, same width) for finer maps.

Input: B02 B03 B04 B08 B05 B06 B07 B8A B11 B12 as reflectance (DN / 10 000), the
PhilEO data loaders' order and scaling. A band the cube lacks is read from the
nearest band in wavelength (B8A from B08…). Each timestep is one image; pooled
embeddings average the timesteps that hold data. Pixels without data are 0 for the
CNN and their patches come out NaN. Pretraining windows were 128 × 128 px: pass
``tile_size=128`` to match.

Weights: published at ``NikolaosDionelis2023/GeoAware-ModelWeights`` (Hugging Face,
linked from the PhilEO-MajorTOM README) without file names, hashes or a licence that
could be confirmed offline: pass ``weights=`` (the encoder state dict, or a
fine-tuned U-Net's, whose encoder part is used).
"""

from __future__ import annotations

import numpy as np

from eoembed.models._encoder import TorchEncoder, load_into, read_checkpoint
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model

S2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
#: No licence is published with the PhilEO code or weights: ask ESA Φ-lab before redistributing.
LICENSE = "unspecified (none published)"
WEIGHTS_PAGE = "https://huggingface.co/NikolaosDionelis2023/GeoAware-ModelWeights"

# size → (depths, dims)
SIZES = {
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
}


def _params(depths, dims, bands: int = 10) -> int:
    """Parameter count of the encoder (conv/linear weights and biases, batch norms)."""

    def block(cin, cout):
        n = cin * cout + cout + 9 * cout + cout + 9 * cout * cout + cout  # conv1, conv2 (depthwise), conv3
        n += 3 * 2 * cout + 2 * cout * (cout // 16)  # three batch norms, SE
        return n + (cin * cout + 2 * cout if cin != cout else 0)

    n = block(bands, dims[0])
    for i, d in enumerate(depths):
        n += sum(block(dims[i - 1] if (i and j == 0) else dims[i], dims[i]) for j in range(d))
    return n


def _macs_per_pixel(depths, dims, bands: int = 10) -> float:
    """Convolution multiply-accumulates per input pixel (stage i runs at 1/4**i of the pixels)."""

    def block(cin, cout):
        return cin * cout + 9 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)

    n = float(block(bands, dims[0]))
    for i, d in enumerate(depths):
        n += sum(block(dims[i - 1] if (i and j == 0) else dims[i], dims[i]) for j in range(d)) / 4**i
    return n


def _make_spec(size: str) -> ModelSpec:
    depths, dims = SIZES[size]
    return ModelSpec(
        name=f"phileo-geoaware-{size}",
        family="phileo",
        version="geoaware-unet",
        size=size,
        embedding_dim=dims[-1],
        modalities={"sentinel2_l2a": S2_BANDS},
        required_modalities=("sentinel2_l2a",),
        token_groups={"sentinel2_l2a": 1},
        max_timesteps=12,
        attends_across_time=False,  # each timestep is one image
        patch_sizes=(16, 8),
        default_patch_size=16,
        square_tiles=False,
        native_resolution=10.0,
        params=_params(depths, dims),
        depth=0,  # a CNN: embed_cost uses macs_per_pixel instead of the transformer estimate
        macs_per_pixel=_macs_per_pixel(depths, dims),
        weights=PretrainedWeights(
            # published file names unknown offline: this is the name eoembed looks for in a folder
            files=(WeightFile(f"phileo-geoaware-{size}.pt"),),
            license=LICENSE,
            url=WEIGHTS_PAGE,
            notes="file names, hashes and licence not confirmed offline: pass weights=PATH",
        ),
        missing_bands_note="copied from the nearest band in wavelength that PhilEO reads (B8A from B08, …)",
        description=f"PhilEO Geo-Aware U-Net {size} encoder, 10 S2 bands ({dims[-1]}-d at stride 16)",
        aliases=(f"phileo-{size}",) + (("phileo",) if size == "nano" else ()),
    )


def _arch(spec: ModelSpec) -> dict:
    if spec.size in SIZES:
        depths, dims = SIZES[spec.size]
    else:  # other specs (e.g. small test models): four stages doubling up to embedding_dim
        d = int(spec.embedding_dim)
        depths, dims = (1, 1, 1, 1), (d // 8, d // 4, d // 2, d)
    return dict(depths=tuple(depths), dims=tuple(dims))


#: Parts of a checkpoint that are not the pretrained encoder (pretraining head; a
#: fine-tuned U-Net's bridge, decoder and head).
_NOT_ENCODER = ("head.", "bridge.", "decoder_blocks.")


def encoder_state(state: dict) -> dict:
    """The encoder's entries: a pretrained encoder (``stem.*``) or a U-Net (``stem.0.*``)."""
    out = {}
    for k, v in state.items():
        if k.startswith(_NOT_ENCODER):
            continue
        out["stem." + k[len("stem.0."):] if k.startswith("stem.0.") else k] = v
    return out


def load_phileo(spec: ModelSpec, weights=None, device: str | None = None) -> "PhilEOEncoder":
    """Build the encoder for ``spec`` (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    return PhilEOEncoder.load(spec, weights, device)


class PhilEOEncoder(TorchEncoder):
    """:class:`eoembed.encode.Encoder` around the Geo-Aware U-Net encoder."""

    mean = np.zeros(len(S2_BANDS))
    std = np.full(len(S2_BANDS), 10000.0)
    fill_from_nearest_band = True
    stamp_weights_file = True

    @classmethod
    def build_module(cls, spec: ModelSpec, source):
        from eoembed.models._phileonet import GeoAwareEncoder

        net = GeoAwareEncoder(bands=len(S2_BANDS), **_arch(spec))
        load_into(net, encoder_state(read_checkpoint(source.weights)), source.weights, spec)
        return net, {"eoembed:feature_level": "last encoder stage (stride 16 after max-pool; stride 8 before)"}

    def compile_targets(self) -> list:
        """``features`` calls the stem and each stage's parts, not ``forward``: compile those."""
        m = self.module
        return [m.stem, *(part for st in m.encoder_blocks for part in (st.blocks, st.downsample))]

    def group_key(self, visible: dict) -> int:
        """A CNN in eval mode treats every image on its own: any tiles may share a batch."""
        return 0

    def tokens(self, batch):
        """Each timestep's image on its own: the feature map at stride ``p`` as ``(B, h, w, T, D)``."""
        p = batch.patch_size
        x = self.tensor(batch.data["sentinel2_l2a"])  # (B, H, W, T, C)
        vis = self.tensor(batch.visible["sentinel2_l2a"])  # (B, h, w, T)
        b, hh, ww, nt, c = x.shape
        imgs = x.permute(0, 3, 4, 1, 2).reshape(b * nt, c, hh, ww)
        fmap = self.module.features(imgs, stride=p)  # (B*T, D, h, w)
        return fmap.reshape(b, nt, -1, hh // p, ww // p).permute(0, 3, 4, 1, 2), vis


for _size in SIZES:
    register_model(_make_spec(_size), loader=load_phileo)
