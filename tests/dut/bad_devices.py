"""Third-party style implementations under test that misbehave the ways real ones do: hang, crash,
return garbage. The suite must report each and carry on, never hang or crash."""

import time

from refmodel.balloon.device import BalloonDevice


class HangsOnRun(BalloonDevice):
    def run(self):
        if self.status.driver_ok:
            time.sleep(3600)
        super().run()


class CrashesOnNotify(BalloonDevice):
    def notify(self, index):
        raise KeyError("queue table corrupted")


class GarbageStatus(BalloonDevice):
    def read_status(self):
        return "DRIVER_OK"


def hangs(mem):
    return HangsOnRun(mem)


def crashes(mem):
    return CrashesOnNotify(mem)


def garbage(mem):
    return GarbageStatus(mem)


def reference(mem):
    return BalloonDevice(mem)


NOT_CALLABLE = 42
