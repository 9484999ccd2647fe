import subprocess
import sys
import time

from features.threads import CpuShare, fit_threads


def test_threads_fit_the_cores_other_processes_leave() -> None:
    assert fit_threads(2, others=0.0, n_cores=2) == 2
    assert fit_threads(2, others=0.3, n_cores=2) == 2  # a light neighbour: keep both
    assert fit_threads(2, others=1.0, n_cores=2) == 1  # one busy process: one core left
    assert fit_threads(2, others=2.5, n_cores=2) == 1  # never fewer than one
    assert fit_threads(4, others=1.0, n_cores=8) == 4  # never more than wanted


def test_cpu_share_sees_another_busy_process_and_not_itself() -> None:
    share = CpuShare()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # this process busy: not "others"
        pass
    alone = share.others()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        share.others()  # the window starts once the burner runs
        time.sleep(1.0)
        beside = share.others()
    finally:
        burner.kill()
    assert beside > alone + 0.3, (alone, beside)  # a burner gets half a core even when busy
