"""The checks steps use to see that their work is done, run against this machine for real."""
from __future__ import annotations

import subprocess


def test_the_packages_check_reads_dpkg_for_real():
    """Against this machine's dpkg: installed packages pass, a missing one fails. The check used to
    expand ${Status} in the shell, so it always failed and every install ran apt-get again."""
    from roles.model import all_packages_installed

    assert subprocess.run(all_packages_installed(("bash", "coreutils"))).returncode == 0
    assert subprocess.run(all_packages_installed(("bash", "appliance-no-such-package"))).returncode == 1
