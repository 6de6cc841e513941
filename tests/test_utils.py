"""Atomic writers and table helpers."""
import os

import tensorflow as tf

from keras_medseg import utils


class AtomicWriteTest(tf.test.TestCase):

    def test_failure_keeps_previous_content_and_leaves_no_temp(self):
        path = os.path.join(self.get_temp_dir(), "sub", "out.txt")
        utils.write_text(path, "first")
        with self.assertRaises(RuntimeError):
            with utils.atomic_write(path) as f:
                f.write("partial")
                raise RuntimeError("interrupted")
        with open(path) as f:
            self.assertEqual(f.read(), "first")
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["out.txt"])

    def test_outputs_follow_the_umask(self):
        path = os.path.join(self.get_temp_dir(), "mode.txt")
        utils.write_text(path, "x")
        mask = os.umask(0)
        os.umask(mask)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o666 & ~mask)

    def test_atomic_path_keeps_suffixes(self):
        path = os.path.join(self.get_temp_dir(), "vol.nii.gz")
        with utils.atomic_path(path) as tmp:
            self.assertTrue(str(tmp).endswith(".nii.gz"))
            tmp.write_bytes(b"x")
        self.assertTrue(os.path.exists(path))

    def test_json_and_csv(self):
        import json

        import numpy as np
        d = self.get_temp_dir()
        utils.write_json(os.path.join(d, "a.json"), {"x": np.float32(1.5), "y": np.arange(2)})
        with open(os.path.join(d, "a.json")) as f:
            self.assertEqual(json.load(f), {"x": 1.5, "y": [0, 1]})
        utils.write_csv(os.path.join(d, "a.csv"), [{"a": 1, "b": 2}])
        with open(os.path.join(d, "a.csv")) as f:
            self.assertEqual(f.read().splitlines(), ["a,b", "1,2"])
        self.assertEqual(utils.markdown_table([{"a": 0.123456}]).splitlines()[2], "| 0.1235 |")
