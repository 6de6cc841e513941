"""Every model builder, custom layer and loss runs under the JAX backend (keras.ops only).

Each case runs in a subprocess with ``KERAS_BACKEND=jax``: it builds a tiny model, runs a
forward pass and one compiled training step, and checks the outputs are finite.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf
from absl.testing import parameterized

_PRELUDE = """
import numpy as np, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
def step(model, x, y, loss, **kw):
    model.compile(optimizer="adam", loss=loss, **kw)
    hist = model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    out = model.predict(x, verbose=0)
    outs = out.values() if isinstance(out, dict) else [out]
    assert all(np.all(np.isfinite(o)) for o in outs)
    assert np.isfinite(hist.history["loss"][-1])
"""

_CASES = {
    "transfer_classifier": """
from keras_medseg.training.transfer import build_transfer_classifier
m = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3),
                              backbone_kwargs={"alpha": 0.35})
step(m, rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"), np.array([0, 2]),
     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    "unet_mobilenetv2": """
from keras_medseg.nerve.segmentation_models import build_unet_mobilenetv2
m = build_unet_mobilenetv2((64, 64, 3), 2)
step(m, rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"),
     rng.integers(0, 2, (1, 64, 64, 1)), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    "doubleunet_bce_dice": """
from keras_medseg.nerve.segmentation_models import build_doubleunet
from keras_medseg.metrics import bce_dice_loss, DiceCoefficient, IoU
m = build_doubleunet((64, 64, 3))
y = rng.integers(0, 2, (1, 64, 64, 1)).astype("float32")
step(m, rng.uniform(0, 1, (1, 64, 64, 3)).astype("float32"), np.concatenate([y, y], -1),
     bce_dice_loss, metrics=[DiceCoefficient(), IoU()])
""",
    "deeplabv3plus": """
from keras_medseg.nerve.segmentation_models import build_deeplabv3plus
m = build_deeplabv3plus((64, 64, 3), 3, backbone="mobilenetv2", output_stride=16)
step(m, rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"),
     rng.integers(0, 3, (1, 64, 64, 1)), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    "focusnet3d": """
from keras_medseg.iseg.models import build_focusnet3d
m = build_focusnet3d((16, 16, 16, 2), 4, levels=2)
step(m, rng.normal(size=(1, 16, 16, 16, 2)).astype("float32"),
     rng.integers(0, 4, (1, 16, 16, 16, 1)), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    "nodule3d_stages": """
from keras_medseg.nodule3d.models import build_candidate_screening, build_fp_reduction
from keras_medseg.nodule3d.losses import OnlineSampleFilteringLoss, fp_reduction_losses
s1 = build_candidate_screening((15, 30, 30, 1))
y = keras.utils.to_categorical(rng.integers(0, 2, 4), 2).reshape(4, 1, 1, 1, 2)
step(s1, rng.normal(size=(4, 15, 30, 30, 1)).astype("float32"), y, OnlineSampleFilteringLoss(seed=1))
s2 = build_fp_reduction(regression=False)
step(s2, rng.normal(size=(2, 25, 60, 60, 1)).astype("float32"),
     keras.utils.to_categorical([0, 1], 2), "categorical_crossentropy")
""",
}


class JaxBackendTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(*[(name, name) for name in _CASES])
    @pytest.mark.slow
    def test_builds_and_trains_under_jax(self, case):
        pytest.importorskip("jax")
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                   CUDA_VISIBLE_DEVICES="")
        code = _PRELUDE + textwrap.dedent(_CASES[case]) + "\nprint('ok')\n"
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=600)
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        self.assertEqual(result.stdout.strip().splitlines()[-1], "ok")
