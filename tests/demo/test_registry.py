"""The demo registry, resume behaviour and the report writer."""
import json
import os

import tensorflow as tf

from keras_medseg import demo
from keras_medseg.utils import markdown_table, new_figure, save_figure, write_text


def _toy_stage(calls):
    def stage(stage_dir, *, seed, quick):
        calls.append(seed)
        fig = new_figure(figsize=(2, 2))
        fig.add_subplot(1, 1, 1).plot([0, 1], [seed, seed + 1])
        save_figure(fig, stage_dir / "curve.png")
        write_text(stage_dir / "table.md", markdown_table([{"a": 1, "b": 0.5}]))
        return demo.StageResult(summary=f"toy stage seed {seed}", artifacts=[
            demo.Artifact("A curve", "curve.png", "figure"),
            demo.Artifact("A table", "table.md", "table")])
    return stage


class DemoRegistryTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self._saved = dict(demo._STAGES)
        self._modules = list(demo.STAGE_MODULES)
        demo.STAGE_MODULES[:] = []
        demo._STAGES.clear()

    def tearDown(self):
        demo._STAGES.clear()
        demo._STAGES.update(self._saved)
        demo.STAGE_MODULES[:] = self._modules
        super().tearDown()

    def test_runs_writes_report_and_resumes(self):
        calls = []
        demo.register_stage("toy", description="toy", order=1)(_toy_stage(calls))
        out = os.path.join(self.get_temp_dir(), "demo")
        report = demo.run_demo(out, seed=3, log=lambda *_: None)
        self.assertEqual(calls, [3])
        text = report.read_text()
        self.assertIn("![A curve](toy/curve.png)", text)
        self.assertIn("| a | b |", text)
        html = (report.parent / "report.html").read_text()
        self.assertIn("<img src='toy/curve.png'", html)
        self.assertIn("<td>0.5</td>", html)
        marker = json.loads((report.parent / "toy" / "stage_result.json").read_text())
        self.assertEqual(marker["summary"], "toy stage seed 3")
        # A second run resumes: the finished stage is skipped but stays in the report.
        demo.run_demo(out, seed=3, log=lambda *_: None)
        self.assertEqual(calls, [3])
        self.assertIn("A curve", report.read_text())
        stale = report.parent / "toy" / "left_over.txt"
        stale.write_text("from the earlier run")
        demo.run_demo(out, seed=4, force=True, log=lambda *_: None)
        self.assertEqual(calls, [3, 4])
        # a forced re-run starts from an empty stage folder (nothing resumed from before)
        self.assertFalse(stale.exists())
        self.assertIn("toy stage seed 4", report.read_text())

    def test_unknown_stage_is_a_clear_error(self):
        demo.register_stage("toy", description="toy")(_toy_stage([]))
        with self.assertRaisesRegex(ValueError, "stages: unknown stage.*nope"):
            demo.run_demo(self.get_temp_dir(), stages=["nope"], log=lambda *_: None)

    def test_double_registration_rejected(self):
        demo.register_stage("toy", description="toy")(_toy_stage([]))
        with self.assertRaisesRegex(ValueError, "registered twice"):
            demo.register_stage("toy", description="toy")(_toy_stage([]))

    def test_failed_stage_leaves_no_marker(self):
        def broken(stage_dir, *, seed, quick):
            raise RuntimeError("boom")
        demo.register_stage("broken", description="b")(broken)
        out = self.get_temp_dir()
        with self.assertRaisesRegex(RuntimeError, "boom"):
            demo.run_demo(out, log=lambda *_: None)
        self.assertFalse(os.path.exists(os.path.join(out, "broken", "stage_result.json")))
