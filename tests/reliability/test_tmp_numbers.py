import json
from test_keboola_faults import trigger_outcome, follow_outcome, TRIGGER_CASES, FOLLOW_CASES, FIRST_JOB_ID  # noqa
from test_openai_faults import outcome, CASES  # noqa
from test_crash_loop import lanes  # noqa

def test_numbers(trigger_outcome, follow_outcome, outcome, lanes):
    out = {"openai": {}, "trigger": {}, "follow": {}}
    for c in CASES:
        reads = [e for e in outcome.first_requests[c.name] if e["path"] == f"/v1/batches/{c.batch_id}"]
        second = [e for e in outcome.simulators[c.name].requests() if e["path"] == f"/v1/batches/{c.batch_id}"]
        out["openai"][c.name] = (len(reads), len(second) - len(reads))
    out["openai_cycle_seconds"] = outcome.first.seconds
    for c in TRIGGER_CASES:
        reqs = trigger_outcome.simulators[c.name].requests()
        out["trigger"][c.name] = dict(
            posts=sum(r["method"] == "POST" for r in reqs),
            searches=sum(r["path"] == "/search/jobs" for r in reqs),
            jobs=len(trigger_outcome.simulators[c.name].keboola_jobs()))
    out["trigger_runs"] = [round(r.seconds, 1) for r in trigger_outcome.runs]
    for c in FOLLOW_CASES:
        reqs = follow_outcome.fault_requests[c.name]
        out["follow"][c.name] = sum(r["path"] == f"/jobs/{FIRST_JOB_ID}" for r in reqs)
    rows = []
    for lane in lanes:
        ws = lane.workspace
        trig = ws.triggers()
        rows.append(dict(runs=len(lane.runs), posts=ws.count("keboola", "POST", "^/jobs$"),
            searches=ws.count("keboola", "GET", "^/search/jobs$"),
            resends=sum(t["attempts"] - 1 for t in trig.values()), jobs=len(ws.sim.keboola_jobs())))
    out["crash"] = {k: sum(r[k] for r in rows) for k in rows[0]}
    out["crash"]["runs_per_lane"] = sorted({r["runs"] for r in rows})
    out["crash"]["lanes"] = len(rows)
    print("NUMBERS", json.dumps(out))
