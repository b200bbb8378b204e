"""Progress lines of long work (no TensorFlow): counts, elapsed and remaining time."""

from dabo_tf.logs import Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_estimates_the_remaining_time_per_kind():
    clock, lines = Clock(), []
    progress = Progress(["slow", "fast", "slow", "fast", "new"], label="suite", clock=clock,
                        log=lambda line, flush: lines.append(line))
    assert len(progress) == 5 and progress.remaining() == 0.0
    for took in (60.0, 10.0):
        progress.begin()
        clock.now += took
        assert progress.end("ran", timed=True) == took
    # Left: a slow run (60 s), a fast one (10 s), one of a kind not seen (mean of all, 35 s).
    assert progress.remaining() == 105.0
    assert lines[-1] == "[suite] 2/5 ran in 10 s | elapsed 1m10s, remaining ~1m45s"
    # A reused run (under a second) is not counted in the estimates.
    progress.end("reused")
    assert progress.spent == {"slow": [60.0], "fast": [10.0]}
    assert duration(3725.4) == "62m05s"


def test_progress_of_runs_of_one_kind():
    clock, lines = Clock(), []
    progress = Progress(total=3, label="bench", clock=clock,
                        log=lambda line, flush: lines.append(line))
    clock.now += 30.0
    progress.end("first")
    assert lines == ["[bench] 1/3 first | elapsed 0m30s, remaining ~1m00s"]


def test_runs_known_to_be_reused_count_nothing():
    clock, lines = Clock(), []
    progress = Progress([Progress.REUSED, "dabo", Progress.REUSED, "dabo"], label="suite",
                        clock=clock, log=lambda line, flush: lines.append(line))
    progress.end("first", timed=True)  # an earlier invocation's result: no time, no estimate
    progress.begin()
    clock.now += 40.0
    progress.end("second", timed=True)
    assert lines == ["[suite] 1/4 first (reused) | elapsed 0m00s, remaining ~0m00s",
                     "[suite] 2/4 second in 40 s | elapsed 0m40s, remaining ~0m40s"]
    assert progress.spent == {"dabo": [40.0]}
    assert progress.remaining() == 40.0  # the reused run left counts nothing
