"""nodule3d CSVs: series, class mapping and patch lists."""
import csv
import os

import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.tables import (PatchRow, SeriesRow, TableError, group_by_series,
                                    read_class_mapping, read_patch_csv, read_series_csv,
                                    write_class_mapping, write_patch_csv, write_series_csv)


class TablesTest(parameterized.TestCase, tf.test.TestCase):

    def _write(self, text, name="t.csv"):
        path = os.path.join(self.get_temp_dir(), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_series_csv_read_and_round_trip(self):
        text = ("/data/a.mhd,aneurysm,10,20,30,6.5,0\n"
                "/data/a.mhd,aneurysm,40.5,2,0,4,0\n"
                "\n"
                "rel/b,bg,,,,,1\n"
                "/data/c.nrrd,,,,,,2\n")
        path = self._write(text, "series.csv")
        rows = read_series_csv(path, classes={"bg": 0, "aneurysm": 1})
        self.assertLen(rows, 4)
        self.assertEqual(rows[0], SeriesRow("/data/a.mhd", "aneurysm", (10.0, 20.0, 30.0), 6.5,
                                            "0", 1))
        self.assertEqual(rows[1].xyz, (40.5, 2.0, 0.0))
        self.assertEqual(rows[2].path, os.path.join(self.get_temp_dir(), "rel/b"))
        self.assertFalse(rows[2].has_lesion)
        self.assertIsNone(rows[3].class_name)
        self.assertEqual(rows[3].line, 5)
        groups = group_by_series(rows)
        self.assertEqual([len(v) for v in groups.values()], [2, 0, 0])
        out = write_series_csv(os.path.join(self.get_temp_dir(), "out.csv"), rows)
        with open(out, newline="") as f:
            written = list(csv.reader(f))
        self.assertEqual(written[0], ["/data/a.mhd", "aneurysm", "10", "20", "30", "6.5", "0"])
        self.assertEqual(written[3], ["/data/c.nrrd", "bg", "", "", "", "", "2"])
        back = read_series_csv(out)
        self.assertEqual([(r.path, r.class_name, r.xyz, r.diameter, r.group) for r in back],
                         [(r.path, r.class_name, r.xyz, r.diameter, r.group) for r in rows])

    def test_header_line_skipped_and_paths_kept(self):
        path = self._write("path,class,x,y,z,d,group\nrel/a.nii,nodule,1,2,3,,g1\n")
        rows = read_series_csv(path, resolve_paths=False)
        self.assertEqual(rows[0].path, "rel/a.nii")
        self.assertIsNone(rows[0].diameter)
        self.assertEqual(rows[0].line, 2)

    @parameterized.named_parameters(
        ("missing_column", "/a.mhd,nodule,1,2,3,4\n", r"line 1: expected 7 columns"),
        ("extra_column", "/a.mhd,nodule,1,2,3,4,0,9\n", r"line 1: expected 7 columns"),
        ("non_numeric", "/a.mhd,nodule,1,two,3,4,0\n", r"line 1: column 'y' must be a number"),
        ("partial", "/a.mhd,nodule,1,,3,4,0\n", r"line 1: x, y, z must be all given"),
        ("negative", "/a.mhd,nodule,-1,2,3,4,0\n", r"line 1: column 'x' must be >= 0"),
        ("diameter", "/a.mhd,nodule,1,2,3,0,0\n", r"line 1: column 'd' must be positive"),
        ("unknown_class", "/a.mhd,bg,,,,,0\n/b.mhd,tumour,1,2,3,4,1\n",
         r"line 2: unknown class 'tumour'"),
        ("bg_lesion", "/a.mhd,bg,1,2,3,4,0\n", r"line 1: a lesion row needs a class"),
        ("class_without_coords", "/a.mhd,nodule,,,,,0\n", r"line 1: class 'nodule' without"),
        ("no_group", "/a.mhd,nodule,1,2,3,4,\n", r"line 1: empty group"),
    )
    def test_series_errors_name_file_and_line(self, text, pattern):
        path = self._write(text, "bad_series.csv")
        with self.assertRaisesRegex(TableError, pattern) as ctx:
            read_series_csv(path, classes={"bg": 0, "nodule": 1})
        self.assertIn(path, str(ctx.exception))

    def test_class_mapping(self):
        path = self._write("bg,0\naneurysm,1\n")
        self.assertEqual(read_class_mapping(path), {"bg": 0, "aneurysm": 1})
        self.assertEqual(read_class_mapping(self._write("class_name,class_id\nbg,0\n")), {"bg": 0})
        out = write_class_mapping(os.path.join(self.get_temp_dir(), "mapping.csv"),
                                  {"bg": 0, "nodule": 1, "mass": 2})
        with open(out) as f:
            self.assertEqual(f.read(), "bg,0\nnodule,1\nmass,2\n")
        self.assertEqual(list(read_class_mapping(out)), ["bg", "nodule", "mass"])
        with self.assertRaisesRegex(ValueError, "'bg': 0"):
            write_class_mapping(os.path.join(self.get_temp_dir(), "m2.csv"), {"nodule": 1})
        with self.assertRaisesRegex(ValueError, "unique"):
            write_class_mapping(os.path.join(self.get_temp_dir(), "m2.csv"), {"bg": 0, "a": 0})

    @parameterized.named_parameters(
        ("no_bg", "aneurysm,1\n", r"'bg,0' is required"),
        ("bg_not_zero", "bg,1\n", r"'bg,0' is required"),
        ("bad_id", "bg,0\nx,one\n", r"line 2: class id must be an integer"),
        ("negative_id", "bg,0\nx,-2\n", r"line 2: class id must be >= 0"),
        ("dup_name", "bg,0\nx,1\nx,2\n", r"line 3: duplicate class name 'x'"),
        ("dup_id", "bg,0\nx,1\ny,1\n", r"line 3: class id 1 already used by 'x'"),
        ("columns", "bg,0,extra\n", r"line 1: expected 2 columns"),
    )
    def test_class_mapping_errors(self, text, pattern):
        path = self._write(text, "mapping.csv")
        with self.assertRaisesRegex(TableError, pattern) as ctx:
            read_class_mapping(path)
        self.assertIn(path, str(ctx.exception))

    def test_patch_csv(self):
        text = ("/p/cs0000_op.npy,aneurysm,12,30,40,,/data/a.mhd\n"
                "/p/cs0001_ng.npy,bg,7.5,8,9,,/data/a.mhd\n")
        path = self._write(text, "patches.csv")
        rows = read_patch_csv(path, classes={"bg": 0, "aneurysm": 1})
        self.assertEqual(rows[0], PatchRow("/p/cs0000_op.npy", "aneurysm", (12.0, 30.0, 40.0),
                                           None, "/data/a.mhd", 1))
        out = write_patch_csv(os.path.join(self.get_temp_dir(), "p2.csv"), rows)
        with open(out) as f:
            self.assertEqual(f.read(), "/p/cs0000_op.npy,aneurysm,12,30,40,,/data/a.mhd\n"
                                       "/p/cs0001_ng.npy,bg,7.5,8,9,,/data/a.mhd\n")
        with self.assertRaisesRegex(TableError, r"line 2: unknown class 'bg'"):
            read_patch_csv(path, classes={"aneurysm": 1})
        bad = self._write("/p/a.npy,bg,1,2,,,/s\n", "bad_patch.csv")
        with self.assertRaisesRegex(TableError, r"bad_patch.csv: line 1: column 'z' is empty"):
            read_patch_csv(bad)

    def test_missing_file_and_bad_rows(self):
        with self.assertRaisesRegex(FileNotFoundError, "nothere.csv"):
            read_series_csv(os.path.join(self.get_temp_dir(), "nothere.csv"))
        with self.assertRaisesRegex(ValueError, r"rows\[0\] must be a SeriesRow"):
            write_series_csv(os.path.join(self.get_temp_dir(), "x.csv"), [("a",)])
