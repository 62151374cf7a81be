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
                                "-q", "-rx", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["xfailed"] == 1
    # The xfail names the list line that accepted the failure, once.
    result.stdout.fnmatch_lines([f"XFAIL*BAL-OP-DRV-11*known deviation, {known} line 1 (every build): *"])
    assert "known deviation: known deviation" not in result.stdout.str()


def test_plugin_bad_dut_is_a_usage_error(pytester):
    result = pytester.runpytest("--virtio-dut", "no-such-dut")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*no such implementation*"])


def test_plugin_is_silent_without_the_option(pytester):
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest("-q").assert_outcomes(passed=1)


def test_plugin_imports_module_factory_from_the_current_directory_and_names_packaged_lists(pytester):
    pytester.makepyfile(mydev="from refmodel.balloon.device import BalloonDevice\n"
                              "def make(mem):\n    return BalloonDevice(mem)\n")
    # In process: the cwd (pytester's directory) is not on sys.path, as under an installed pytest script.
    result = pytester.runpytest("--virtio-dut", "mydev:make", "--virtio-role", "device", "--virtio-profile",
                                "dev", "--virtio-known-deviations", "qemu", "-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes["passed"] > 30 and "failed" not in outcomes


def test_plugin_unknown_known_deviations_name_is_a_usage_error(pytester):
    result = pytester.runpytest("--virtio-dut", "reference", "--virtio-known-deviations", "nope")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--known-deviations nope: no such file*(one of: qemu, linux)*"])


def test_plugin_missing_method_is_one_failure_naming_it(pytester):
    pytester.makepyfile(halfdev="from refmodel.balloon.device import BalloonDevice\n"
                                "class HalfDevice(BalloonDevice):\n    set_target = None\n"
                                "def make(mem):\n    return HalfDevice(mem)\n")
    result = pytester.runpytest_subprocess("--virtio-dut", "halfdev:make", "--virtio-role", "device", "-q",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*--dut halfdev:make: device HalfDevice has no method set_target()*"])
    assert "Traceback" not in result.stdout.str() and "pytest_plugin.py" not in result.stdout.str()
