"""A dose above 1 lifts the plan's per-cell cap, and the report says by how much."""

import pandas as pd

from cardiofair.plan import PlanSettings, plan_synthesis
from cardiofair.report.tables import cap_lift_table


def test_a_dose_above_one_shows_the_capped_cell_past_its_cap_and_past_the_request():
    # Five women with heart failure against 100 men: the planner asks for 95 and its cap of 5
    # per real record allows 25.
    cells = [("Female", "heart failure", 5), ("Male", "heart failure", 100), ("Female", "healthy", 40),
             ("Male", "healthy", 40)]
    rows = [(sex, diagnosis) for sex, diagnosis, n in cells for _ in range(n)]
    manifest = pd.DataFrame({"record_id": [f"r{i}" for i in range(len(rows))],
                             "subject_id": [f"s{i}" for i in range(len(rows))], "sex": [r[0] for r in rows],
                             "age_years": 65.0, "bmi": 22.0, "diagnosis": [r[1] for r in rows], "prompt": "",
                             "is_synthetic": False})
    plan = plan_synthesis(manifest, PlanSettings(attributes=("sex",), max_ratio_overall=10.0))
    assert cap_lift_table(plan, [0.5, 1.0]) is None
    table = cap_lift_table(plan, [1.0, 2.0, 4.0, 2.0, 4.0])  # one dose per arm that ran at it
    assert table.header == ["cell", "real", "asked for", "planned (the cap)", "dose 2", "dose 4"]
    assert table.rows == [["Female, heart failure", "5", "95", "25 (5.0 per real)", "50 (10.0 per real)",
                           "100 (20.0 per real)"]]
    assert "Female, heart failure: dose 4 gives more records than the planner asked for (95)." in table.notes
    uncapped = plan.assign(capped=False)
    assert cap_lift_table(uncapped, [1.0, 4.0]) is None
