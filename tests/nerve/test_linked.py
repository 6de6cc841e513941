"""Linked pipeline: shared-encoder outputs equal the two models', segmentation only for nerve
frames, ordered frames and a video, IoU against binarised masks, overlay arithmetic."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_medseg.nerve import linked
from keras_medseg.nerve.segmentation_models import build_unet_mobilenetv2
from keras_medseg.training import build_transfer_classifier, get_backbone


def _brightness_classifier(size):
    """Logits (mean - 128, 128 - mean, -100): bright frames are nerve (class 0)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3)
    out = dense(x)
    model = keras.Model(inputs, out)
    kernel = np.zeros((3, 3), np.float32)
    kernel[:, 0] = 1 / 3
    kernel[:, 1] = -1 / 3
    dense.set_weights([kernel, np.array([-128, 128, -100], np.float32)])
    return model


class SharedModelTest(tf.test.TestCase):
    @pytest.mark.slow
    def test_shared_equals_two_models(self):
        keras.utils.set_random_seed(1)
        seg = build_unet_mobilenetv2((64, 64, 3), 2)
        cls = build_transfer_classifier("mobilenetv2", 3, input_shape=(64, 64, 3))
        x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
        with self.assertRaisesRegex(ValueError, "do not share"):
            linked.build_shared_model(cls, seg)
        backbone = get_backbone(cls)
        for layer in seg.get_layer("encoder").layers:
            if layer.weights:
                layer.set_weights(backbone.get_layer(layer.name).get_weights())
        out = linked.build_shared_model(cls, seg)(x)
        self.assertAllClose(out["class_logits"], cls(x), atol=1e-5)
        self.assertAllClose(out["seg_logits"], seg(x), atol=1e-5)
        # The classifier on the segmenter's own encoder shares it by construction.
        enc_cls = linked.build_encoder_classifier(seg, 3)
        out = linked.build_shared_model(enc_cls, seg)(x)
        self.assertAllClose(out["class_logits"], enc_cls(x), atol=1e-5)
        # Both layouts of the pipeline give the same decisions and masks.
        results = [linked.LinkedPipeline(cls, seg, layout=lay, batch_size=2).process_array(x)
                   for lay in ("shared", "two-model")]
        self.assertAllEqual(results[0].pred, results[1].pred)
        self.assertAllClose(results[0].probs, results[1].probs, atol=1e-5)
        for a, b in zip(results[0].masks, results[1].masks):
            self.assertEqual(a is None, b is None)
            if a is not None:
                self.assertGreater(np.mean(a == b), 0.999)

    def test_errors(self):
        seg = build_unet_mobilenetv2((64, 64, 3), 2)
        with self.assertRaisesRegex(ValueError, "layout"):
            linked.LinkedPipeline(seg, seg, layout="fused")
        with self.assertRaisesRegex(ValueError, "InferenceMode"):
            linked.build_shared_model(_brightness_classifier(64), seg)
        with self.assertRaisesRegex(ValueError, "encoder"):
            linked.build_encoder_classifier(_brightness_classifier(64))


class PipelineTest(tf.test.TestCase):
    def test_segments_only_nerve_frames(self):
        seg = build_unet_mobilenetv2((64, 64, 3), 2)
        calls = []

        class Counting(keras.Model):
            def call(self, x):
                calls.append(int(x.shape[0]))
                return seg(x)

        counting = Counting()
        counting(np.zeros((1, 64, 64, 3), np.float32))
        calls.clear()
        frames = np.zeros((5, 64, 64, 3), np.float32)
        frames[[1, 4]] = 200.0  # bright = nerve
        pipe = linked.LinkedPipeline(_brightness_classifier(64), counting, layout="two-model",
                                     batch_size=5)
        pipe._decode = pipe._decode.python_function  # eager: count the real calls
        res = pipe.process_array(frames)
        self.assertEqual(calls, [2])  # one call, on the two nerve frames only
        self.assertAllEqual(res.segmented, [False, True, False, False, True])
        self.assertEqual([m is None for m in res.masks], [True, False, True, True, False])
        self.assertEqual((res.seg_calls, res.seg_frames), (1, 2))
        self.assertTrue(np.all(res.time_segment[[0, 2, 3]] == 0))
        calls.clear()
        res = pipe.process_array(np.zeros((3, 64, 64, 3), np.float32))
        self.assertEqual(calls, [])
        self.assertEqual(res.seg_calls, 0)

    def test_overlay_and_iou(self):
        frame = np.full((4, 4, 3), 100, np.uint8)
        mask = np.zeros((2, 2), bool)
        mask[0, 0] = True  # covers the top-left 2x2 block after nearest resize
        out = linked.overlay_mask(frame, mask)
        self.assertAllEqual(out[0, 0], [80, 131, 80])
        self.assertAllEqual(out[3, 3], [80, 80, 80])
        self.assertAllEqual(frame, np.full((4, 4, 3), 100, np.uint8))  # input untouched
        truth = np.zeros((4, 4), bool)
        truth[:2, :3] = True
        self.assertAlmostEqual(linked._iou(truth, mask), 4 / 6)

    def test_natural_order(self):
        root = os.path.join(self.get_temp_dir(), "lk")
        for sub in ("order", "annotation", "hdversion"):
            os.makedirs(os.path.join(root, sub))
        img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
        for name in ("10_c.jpg", "2_a.jpg", "1_b.jpg"):
            img.save(os.path.join(root, "order", name))
        img.save(os.path.join(root, "hdversion", "a.jpg"))
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(root, "annotation",
                                                                      "c.png"))
        frames = linked.list_linked_frames(root)
        self.assertEqual(frames.names, ["b", "a", "c"])
        self.assertTrue(frames.hd_paths[1].endswith(os.path.join("hdversion", "a.jpg")))
        self.assertTrue(frames.hd_paths[0].endswith("1_b.jpg"))
        self.assertEqual([p is None for p in frames.annotation_paths], [True, True, False])
        with self.assertRaisesRegex(FileNotFoundError, "order"):
            linked.list_linked_frames(self.get_temp_dir() + "/missing")

    @pytest.mark.slow
    def test_run_linked_writes_ordered_frames_and_video(self):
        import imageio.v2 as imageio

        from keras_medseg.sampledata.nerve import generate_nerve

        data = generate_nerve(os.path.join(self.get_temp_dir(), "data"), image_size=64,
                              n_videos=2, test_videos=1, frames_per_class=2, raw_frames=0)
        seg = build_unet_mobilenetv2((224, 224, 3), 2)
        pipe = linked.LinkedPipeline(_brightness_classifier(224), seg, layout="two-model",
                                     batch_size=4)
        out = os.path.join(self.get_temp_dir(), "out")
        res = linked.run_linked(pipe, data.linked_dir, out, log=lambda *a: None)
        names = linked.list_linked_frames(data.linked_dir).names
        self.assertEqual([r["name"] for r in res.rows], names)
        for k in range(1, len(names) + 1):
            self.assertTrue(os.path.isfile(os.path.join(out, "output", f"frame{k}.png")))
        reader = imageio.get_reader(os.path.join(out, "linked.mp4"))
        self.assertEqual(reader.count_frames(), len(names))
        reader.close()
        for f in ("frames.csv", "timing.md", "summary.json"):
            self.assertTrue(os.path.isfile(os.path.join(out, f)))
        s = res.summary
        annotated = sum(p is not None for p in linked.list_linked_frames(
            data.linked_dir).annotation_paths)
        self.assertEqual(s["nerve_frames_with_mask"], annotated)
        self.assertEqual(s["missed_nerve_frames"] + s["iou_segmented_nerve_frames"]["n"]
                         + s["iou_segmented_nerve_frames"]["n_nan"], annotated)
        self.assertEqual(s["segmented_frames"], int(np.sum(res.batch.pred == 0)))
        first = np.asarray(Image.open(os.path.join(out, "output", "frame1.png")))
        self.assertEqual(first.shape, (64, 64, 3))  # drawn on the hdversion frame
