"""Report files: plots with continuous epochs, model.txt counts, labelled sample images,
evaluation with exactly one softmax."""
from pathlib import Path

import keras
import numpy as np
import scipy.special
import tensorflow as tf
from PIL import Image

from keras_medseg.training import (
    build_transfer_classifier,
    evaluate_classifier,
    plot_accuracy_loss,
    predict_scores,
    save_prediction_sample,
    write_history_plots,
    write_model_summary,
)
from keras_medseg.training.reports import _join_histories

H1 = {"epoch": [0, 1], "loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
      "accuracy": [0.4, 0.5], "val_accuracy": [0.3, 0.45]}
H2 = {"epoch": [2, 3, 4], "loss": [0.7, 0.6, 0.5], "val_loss": [0.8, 0.7, 0.75],
      "accuracy": [0.6, 0.7, 0.8], "val_accuracy": [0.5, 0.6, 0.55]}


def small_classifier():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inp))
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(x), name="small")


class PlotTest(tf.test.TestCase):

    def test_epochs_numbered_on_across_stages(self):
        epochs, series, starts = _join_histories([H1, H2])
        self.assertEqual(epochs, [1, 2, 3, 4, 5])
        self.assertEqual(series["loss"], H1["loss"] + H2["loss"])
        self.assertEqual(starts, [1, 3])
        # without "epoch" keys a stage continues the numbering of the previous one
        strip = [{k: v for k, v in h.items() if k != "epoch"} for h in (H1, H2)]
        self.assertEqual(_join_histories(strip)[0], [1, 2, 3, 4, 5])

    def test_files(self):
        out = Path(self.get_temp_dir()) / "plots"
        paths = write_history_plots(out, H1, H2)
        self.assertEqual([p.name for p in paths], ["acc_loss.png", "acc_loss_after_fine_tuning.png"])
        for p in paths:
            with Image.open(p) as im:
                self.assertEqual(im.format, "PNG")
                self.assertGreater(im.size[1], im.size[0])  # two stacked panels
        only2 = write_history_plots(Path(self.get_temp_dir()) / "p2", {}, H2)
        self.assertEqual([p.name for p in only2], ["acc_loss_after_fine_tuning.png"])

    def test_errors(self):
        path = Path(self.get_temp_dir()) / "x.png"
        with self.assertRaisesRegex(ValueError, "at least one"):
            plot_accuracy_loss(path)
        with self.assertRaisesRegex(ValueError, "different lengths"):
            plot_accuracy_loss(path, {"loss": [1.0, 2.0], "accuracy": [0.1]})
        with self.assertRaisesRegex(ValueError, "dict or a keras History"):
            plot_accuracy_loss(path, [1, 2])
        with self.assertRaisesRegex(ValueError, "neither"):
            plot_accuracy_loss(path, {"mae": [1.0]})


class ModelSummaryTest(tf.test.TestCase):

    def test_counts(self):
        model = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3),
                                          backbone_kwargs={"alpha": 0.35})
        path = write_model_summary(Path(self.get_temp_dir()) / "model.txt", model)
        fields = dict(line.split(": ", 1) for line in path.read_text().splitlines())
        backbone = model.get_layer("backbone").layer
        self.assertEqual(int(fields["depth (backbone layers)"]), len(backbone.layers))
        self.assertEqual(int(fields["trainable variables"]), 2)
        dense = model.get_layer("logits")
        self.assertEqual(int(fields["trainable params"]), dense.count_params())
        self.assertEqual(int(fields["total params"]), model.count_params())


class SampleAndEvaluationTest(tf.test.TestCase):

    def test_sample_image(self):
        image = np.full((40, 60, 3), 128, np.uint8)
        out = Path(self.get_temp_dir()) / "samples"
        path = save_prediction_sample(out, image, true_label=2, pred_label=0,
                                      model_name="MobileNetV2", run="020", batch=7, index=11,
                                      class_names=["nerve", "opening wound", "tendon"])
        self.assertEqual(path.name, "MobileNetV2020Wrong20711.png")
        drawn = np.asarray(Image.open(path))
        self.assertEqual(drawn.shape, image.shape)
        self.assertFalse(np.array_equal(drawn[:12, :30], image[:12, :30]))  # label drawn
        self.assertTrue(np.array_equal(drawn[-5:, -5:], image[-5:, -5:]))  # rest untouched
        self.assertTrue(np.all(image == 128))  # input not modified
        ok = save_prediction_sample(out, image[..., 0] / 255.0, true_label=1, pred_label=1,
                                    model_name="m", batch=0, index=0)
        self.assertEqual(ok.name, "mCorrect1100.png")
        with self.assertRaisesRegex(ValueError, "shape"):
            save_prediction_sample(out, np.zeros((4, 4, 2)), true_label=0, pred_label=0,
                                   model_name="m")

    def test_evaluate_single_softmax_and_reports(self):
        model = small_classifier()
        rng = np.random.default_rng(1)
        x = rng.uniform(0, 255, (10, 6, 6, 3)).astype("float32")
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # batches 4, 4, 2
        out = Path(self.get_temp_dir()) / "eval"
        result = evaluate_classifier(model, ds, class_names=["a", "b", "c"], out_dir=out,
                                     prefix="small_test", sample_dir=out / "samples", run="1")
        expected = scipy.special.softmax(model.predict(x, verbose=0).astype(np.float64), axis=1)
        self.assertAllClose(result.y_score, expected, atol=1e-6)
        self.assertAllEqual(result.y_true, y)
        self.assertAllClose(result.accuracy, np.mean(expected.argmax(1) == y))
        for key in ("CM", "F1", "AUC", "roc"):
            self.assertTrue(Path(result.paths[key]).is_file())
        names = [p.name for p in result.samples]
        self.assertLen(names, 3)
        self.assertTrue(names[0].startswith("small1") and names[0].endswith("03.png"))
        self.assertTrue(names[2].endswith("21.png"))  # batch 2, last index 1
        # one-hot labels and probabilities (from_logits=False) pass through unchanged
        onehot = tf.data.Dataset.from_tensor_slices((x, np.eye(3)[y])).batch(5)
        probs = keras.Model(model.input, keras.layers.Softmax()(model.output))
        y_true, y_score = predict_scores(probs, onehot, from_logits=False)
        self.assertAllEqual(y_true, y)
        self.assertAllClose(y_score, expected, atol=1e-6)

    def test_evaluate_errors(self):
        model = small_classifier()
        x = np.zeros((2, 6, 6, 3), "float32")
        ds = [(x, np.array([0, 1]))]
        with self.assertRaisesRegex(ValueError, "together"):
            evaluate_classifier(model, ds, class_names=["a", "b", "c"], out_dir="x")
        with self.assertRaisesRegex(ValueError, "outputs 3 classes"):
            evaluate_classifier(model, ds, class_names=["a", "b"])
        with self.assertRaisesRegex(ValueError, "no batches"):
            predict_scores(model, [])
        with self.assertRaisesRegex(ValueError, "labels"):
            predict_scores(model, [(x, np.array([0, 1, 2]))])
        with self.assertRaisesRegex(ValueError, r"\(images, labels\)"):
            predict_scores(model, [x])
