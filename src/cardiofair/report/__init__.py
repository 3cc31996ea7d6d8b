"""The study report: one self-contained HTML page, its figures, the model card and the datasheet."""

from cardiofair.report.build import COUNTERFACTUALS, ReportError, write_report

__all__ = ["COUNTERFACTUALS", "ReportError", "write_report"]
