"""tune_gc: what start-up loaded leaves the collector's reach; cycles made later are still collected."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# In a child interpreter: tune_gc changes process-wide state that the rest of the test session should not get.
SCRIPT = textwrap.dedent(
    """
    import gc, json, weakref
    from veil_collector.gc_tuning import tune_gc

    loaded_at_start = [[i] for i in range(10_000)]  # stands in for models and modules
    tracked = len(gc.get_objects())
    tune_gc()
    after = len(gc.get_objects())

    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    ref = weakref.ref(cycle)
    del cycle
    gc.collect()
    print(json.dumps({
        "tracked": tracked, "frozen": gc.get_freeze_count(), "after": after,
        "threshold": gc.get_threshold(), "cycle_collected": ref() is None,
    }))
    """
)


def test_tune_gc_freezes_start_up_objects_and_still_collects_new_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["frozen"] >= result["tracked"] - 100  # all that start-up made (a few died in the collect)
    assert result["after"] < 100  # a full pass now walks almost nothing
    assert result["threshold"] == [50_000, 20, 100]
    assert result["cycle_collected"]
