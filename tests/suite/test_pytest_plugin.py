"""The pytest plugin: one option runs the suite inside a vendor's own pytest, one item per requirement."""

pytest_plugins = ["pytester"]


def test_plugin_reports_the_broken_requirement(pytester):
    result = pytester.runpytest("--virtio-dut", "mutant-stale-actual", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=result.parseoutcomes().get("passed", 0),
                           skipped=result.parseoutcomes().get("skipped", 0))
    result.stdout.fnmatch_lines(["*BAL-OP-DRV-11*"])
    assert result.parseoutcomes()["passed"] > 30


def test_plugin_known_deviation_is_an_xfail(pytester):
    known = pytester.makefile(".txt", known="BAL-OP-DRV-11\n")
    result = pytester.runpytest("--virtio-dut", "mutant-stale-actual", "--virtio-known-deviations", str(known),
                                "-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["xfailed"] == 1


def test_plugin_bad_dut_is_a_usage_error(pytester):
    result = pytester.runpytest("--virtio-dut", "no-such-dut")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*no such implementation*"])


def test_plugin_is_silent_without_the_option(pytester):
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest("-q").assert_outcomes(passed=1)
