"""Property tests (hypothesis) of keras_medseg.metrics.surface: symmetry, bounds,
translation invariance and the empty-mask rule, in every mode."""
import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_medseg.metrics.surface import MODES, compute_asd, compute_surface_metrics

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mask_pairs(draw, allow_empty=False):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(2, 7), min_size=ndim, max_size=ndim)))
    t = draw(hnp.arrays(bool, shape))
    p = draw(hnp.arrays(bool, shape))
    if not allow_empty:
        t.flat[draw(st.integers(0, t.size - 1))] = True
        p.flat[draw(st.integers(0, p.size - 1))] = True
    spacing = tuple(draw(st.lists(st.floats(0.25, 4.0), min_size=ndim, max_size=ndim)))
    mode = draw(st.sampled_from(MODES))
    return t, p, spacing, mode


class SurfacePropertiesTest(tf.test.TestCase):

    @SETTINGS
    @given(mask_pairs())
    def test_symmetric_metrics_are_symmetric(self, case):
        t, p, spacing, mode = case
        ab = compute_surface_metrics(t, p, spacing=spacing, mode=mode)
        ba = compute_surface_metrics(p, t, spacing=spacing, mode=mode)
        for key in ("hd", "hd95", "asd"):
            self.assertAllClose(ab[key], ba[key], atol=1e-9, msg=key)
        self.assertAllClose(ab["asd_true_to_pred"], ba["asd_pred_to_true"], atol=1e-9)

    @SETTINGS
    @given(mask_pairs(), st.floats(0.0, 100.0))
    def test_bounds(self, case, percentile):
        t, p, spacing, mode = case
        out = compute_surface_metrics(t, p, spacing=spacing, mode=mode, percentile=percentile)
        tol = 1e-9
        self.assertGreaterEqual(out["hd95"], 0.0)
        self.assertLessEqual(out["hd95"], out["hd"] + tol)
        self.assertLessEqual(out["asd"], out["hd"] + tol)
        self.assertLessEqual(out["asd_true_to_pred"], out["hd"] + tol)
        self.assertLessEqual(out["asd_pred_to_true"], out["hd"] + tol)
        diagonal = np.sqrt(np.sum((np.asarray(t.shape) * spacing) ** 2))
        self.assertLessEqual(out["hd"], diagonal + tol)

    @SETTINGS
    @given(mask_pairs(), st.data())
    def test_translation_invariance(self, case, data):
        t, p, spacing, mode = case
        pad = [(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in t.shape]
        a = compute_surface_metrics(t, p, spacing=spacing, mode=mode)
        b = compute_surface_metrics(np.pad(t, pad), np.pad(p, pad), spacing=spacing, mode=mode)
        for key in a:
            self.assertAllClose(a[key], b[key], atol=1e-9, msg=key)

    @SETTINGS
    @given(mask_pairs(allow_empty=True), st.sampled_from(["inf", "diagonal"]))
    def test_empty_rule(self, case, policy):
        t, p, spacing, mode = case
        out = compute_surface_metrics(t, p, spacing=spacing, mode=mode, empty_policy=policy)
        directed = compute_asd(t, p, spacing=spacing, mode=mode, empty_policy=policy,
                               symmetric=False)
        values = np.array(list(out.values()) + list(directed))
        if not t.any() and not p.any():
            self.assertTrue(np.all(np.isnan(values)))
        elif not t.any() or not p.any():
            expected = (np.inf if policy == "inf"
                        else np.sqrt(np.sum((np.asarray(t.shape) * spacing) ** 2)))
            self.assertAllClose(values, np.full(len(values), expected))
        else:
            self.assertTrue(np.all(np.isfinite(values)))


if __name__ == "__main__":
    tf.test.main()
