"""The per-stage breakdown and the profile summary run on the real code (speed is never asserted)."""

from benchmarks import breakdown, profile

STAGES = {"emit", "emit anchored", "route", "serialize", "transfer", "deserialize", "dispatch", "ack", "acker"}


def test_breakdown_times_every_stage():
    results = breakdown.measure(3000)
    assert set(results) == STAGES
    assert all(results[s] > 0 for s in STAGES - {"ack"})  # ack is a difference of two timings


def test_profile_buckets_the_whole_run():
    modes = profile.profile(300)["modes"]
    assert set(modes) == {"unacked", "acked"}
    for summary in modes.values():
        assert abs(sum(b["percent"] for b in summary["buckets"].values()) - 100) < 0.01
        assert summary["top"] and summary["profiled_words_per_s"] > 0
