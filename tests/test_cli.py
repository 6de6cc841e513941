"""The console script."""
import subprocess
import sys

import tensorflow as tf

from keras_medseg import cli


class CliTest(tf.test.TestCase):

    def test_help_and_list(self):
        out = subprocess.run([sys.executable, "-m", "keras_medseg.cli", "demo", "--list"],
                             capture_output=True, text=True, check=True)
        self.assertIn("metrics", out.stdout)
        # TensorFlow's C++ start-up banner is not shown in normal use.
        self.assertNotIn("oneDNN", out.stderr)
        self.assertNotIn("absl::InitializeLog", out.stderr)

    def test_bad_stage_exits_2_with_message(self):
        rc = cli.main(["demo", "--stages", "nope", "--out", self.get_temp_dir()])
        self.assertEqual(rc, 2)
