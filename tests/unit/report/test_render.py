"""Cells of the human layout: the paper's "0.0639s (88.87)" and its CI, numbers, and padding."""

from __future__ import annotations

import math

import pytest

from condi_pipe.report import ReportRow
from condi_pipe.report.render import format_seconds, number_cell, padded_rows, time_accuracy_cell


@pytest.mark.parametrize("seconds, text", [(0.06391, "0.0639s"), (0.000123456, "0.000123s"), (0.1, "0.100s"),
                                           (1.2345, "1.23s"), (12.0, "12.00s")])
def test_seconds_keep_three_significant_digits_below_one_second(seconds, text):
    assert format_seconds(seconds) == text


def test_a_cell_shows_its_row_time_accuracy_and_ci():
    row = ReportRow("condi-sr", 3, None, 88.8666, 0.063912, {"ci95_vs_dense_pp": [-3.04, 0.0]})
    assert time_accuracy_cell(row) == "0.0639s (88.87) [-3.0, +0.0]"
    assert time_accuracy_cell(ReportRow("dense", None, None, 90.0, 1.5, {})) == "1.50s (90.00)"
    assert time_accuracy_cell(None) == ""


def test_numbers_and_padding():
    assert number_cell(math.nan) == "n/a" and number_cell(None) == "n/a" and number_cell(0.123456) == "0.1235"
    assert number_cell(61.14245, 2) == "61.14"
    assert padded_rows([("1", "a"), ("All",)], 3) == (("1", "a", ""), ("All", "", ""))
