"""apt parsers against captured Debian 12 output and composed Ubuntu/French/held cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikoma.runner.parsers.apt import important_lines, parse_held, parse_simulated_upgrade, reboot_required

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apt"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_captured_debian12_dist_upgrade_lists_every_inst_line_with_versions() -> None:
    result = parse_simulated_upgrade(_read("debian12_dist_upgrade_captured.txt"))
    assert result["counts"]["upgradable"] == 124
    assert result["counts"]["notUpgraded"] == 0
    bash = next(u for u in result["upgrades"] if u["package"] == "bash")
    assert bash["fromVersion"] == "5.2.15-2+b8"
    assert bash["toVersion"] == "5.2.15-2+b13"
    assert bash["arch"] == "amd64"
    assert bash["origin"] == "Debian"
    assert bash["suite"] == "oldstable"
    assert bash["security"] is False
    assert result["unrecognizedSections"] == []


def test_upgrade_published_by_debian_security_is_flagged_and_reports_the_security_suite() -> None:
    result = parse_simulated_upgrade(_read("debian12_dist_upgrade_captured.txt"))
    gcrypt = next(u for u in result["upgrades"] if u["package"] == "libgcrypt20")
    assert gcrypt["security"] is True
    assert gcrypt["origin"] == "Debian-Security"
    assert gcrypt["suite"] == "oldstable-security"
    assert [o["origin"] for o in gcrypt["origins"]] == ["Debian", "Debian-Security"]
    assert result["counts"]["security"] == sum(1 for u in result["upgrades"] if u["security"]) > 0


def test_trailing_dependency_bracket_after_inst_line_is_ignored() -> None:
    line = "Inst liblzma-dev [5.4.1-1] (5.4.1-1+deb12u2 Debian-Security:12/oldstable-security [amd64]) []"
    (upgrade,) = parse_simulated_upgrade(line)["upgrades"]
    assert upgrade["package"] == "liblzma-dev"
    assert upgrade["toVersion"] == "5.4.1-1+deb12u2"
    assert upgrade["security"] is True


def test_captured_french_and_german_output_parse_like_english() -> None:
    english = parse_simulated_upgrade(_read("debian12_dist_upgrade_captured.txt"))
    for name in ("debian12_dist_upgrade_fr_captured.txt", "debian12_dist_upgrade_de_captured.txt"):
        localized = parse_simulated_upgrade(_read(name))
        assert localized["upgrades"] == english["upgrades"]
        assert localized["counts"] == english["counts"]
        assert localized["unrecognizedSections"] == []


def test_french_kept_back_header_with_no_break_space_is_recognised() -> None:
    text = _read("debian12_dist_upgrade_fr_keptback_composed.txt")
    assert "\u00a0:" in text
    result = parse_simulated_upgrade(text)
    assert result["keptBack"] == ["linux-image-amd64"]
    assert result["counts"]["notUpgraded"] == 1


def test_ubuntu_phased_kept_back_new_and_removed_packages_are_separated() -> None:
    result = parse_simulated_upgrade(_read("ubuntu2204_dist_upgrade_phased_keptback_composed.txt"))
    assert result["phased"] == ["gnome-shell", "libmutter-10-0"]
    assert result["keptBack"] == ["netplan.io"]
    assert [r["package"] for r in result["removals"]] == ["ubuntu-advantage-pro"]
    assert result["removals"][0]["version"] == "27.13.6~22.04.1"
    assert {i["package"] for i in result["newInstalls"]} == {
        "linux-headers-5.15.0-91",
        "linux-headers-5.15.0-91-generic",
        "linux-image-5.15.0-91-generic",
        "linux-modules-5.15.0-91-generic",
    }
    assert all(i["fromVersion"] is None for i in result["newInstalls"])
    counts = result["counts"]
    assert (counts["upgradable"], counts["newInstalls"], counts["removals"]) == (6, 4, 1)
    assert (counts["keptBack"], counts["phased"], counts["notUpgraded"]) == (1, 2, 3)


def test_ubuntu_security_pocket_marks_upgrade_as_security_but_updates_pocket_does_not() -> None:
    result = parse_simulated_upgrade(_read("ubuntu2204_dist_upgrade_phased_keptback_composed.txt"))
    by_name = {u["package"]: u for u in result["upgrades"]}
    assert by_name["openssl"]["security"] is True
    assert by_name["openssl"]["suite"] == "jammy-security"
    assert by_name["tzdata"]["security"] is False
    assert by_name["tzdata"]["suite"] == "jammy-updates"
    assert result["counts"]["security"] == 5


def test_simulation_notice_and_autoremove_prose_do_not_leak_into_lists() -> None:
    result = parse_simulated_upgrade(_read("ubuntu2204_dist_upgrade_phased_keptback_composed.txt"))
    assert "linux-headers-5.15.0-88" not in result["keptBack"] + result["phased"]
    assert result["unrecognizedSections"] == []


def test_held_packages_show_up_as_kept_back_and_in_showhold() -> None:
    result = parse_simulated_upgrade(_read("debian12_upgrade_held_keptback_composed.txt"))
    held = parse_held(_read("debian12_showhold_composed.txt"))
    assert held == ["docker-ce", "docker-ce-cli", "linux-image-amd64"]
    assert set(held) <= set(result["keptBack"])
    assert result["counts"]["security"] == 2


def test_empty_showhold_output_means_no_held_packages() -> None:
    assert parse_held(_read("debian12_showhold_empty_captured.txt")) == []


def test_showhold_ignores_apt_diagnostics() -> None:
    assert parse_held("W: Unable to read /etc/apt/preferences.d/ - x\nnginx\nnginx\n") == ["nginx"]


def test_unknown_locale_header_is_reported_not_guessed() -> None:
    text = "Следующие пакеты будут обновлены:\n  foo\nInst foo [1] (2 Debian:12/stable [amd64])\n"
    result = parse_simulated_upgrade(text)
    assert result["upgrades"][0]["package"] == "foo"
    assert result["keptBack"] == []
    assert result["unrecognizedSections"] == ["Следующие пакеты будут обновлены:"]


def test_empty_or_garbage_input_yields_empty_result() -> None:
    result = parse_simulated_upgrade("")
    assert result["upgrades"] == []
    assert result["counts"]["notUpgraded"] is None
    assert parse_simulated_upgrade("Inst broken line without parens")["upgrades"] == []


def test_captured_unknown_package_error_is_an_important_error_line() -> None:
    lines = important_lines(_read("debian12_install_unknown_package_captured.txt"))
    assert lines == [
        {
            "category": "error",
            "severity": "error",
            "message": "E: Unable to locate package ikoma-nonexistent-pkg",
            "packageName": "ikoma-nonexistent-pkg",
            "occurrences": 1,
            "firstLine": 4,
        }
    ]


def test_captured_clean_simulation_has_no_important_lines() -> None:
    assert important_lines(_read("debian12_dist_upgrade_captured.txt")) == []


def test_deprecation_and_suite_change_notices_are_future_major_changes() -> None:
    lines = important_lines(_read("apt_update_messages_composed.txt"))
    future = [line for line in lines if line["category"] == "future_major_change"]
    assert len(future) == 2
    assert any(
        "changed its 'Suite' value" in line["message"] and line["severity"] == "info" for line in future
    )
    assert any("DEPRECATION" in line["message"] and line["severity"] == "warning" for line in future)


def test_repeated_warning_is_deduplicated_with_occurrence_count() -> None:
    lines = important_lines(_read("apt_update_messages_composed.txt"))
    configured_twice = [line for line in lines if "configured multiple times" in line["message"]]
    assert len(configured_twice) == 1
    assert configured_twice[0]["occurrences"] == 2
    assert configured_twice[0]["category"] == "warning"


def test_unrelated_notices_and_fetch_progress_are_not_important() -> None:
    messages = [line["message"] for line in important_lines(_read("apt_update_messages_composed.txt"))]
    assert not any(m.startswith(("Hit:", "Get:")) for m in messages)
    assert not any("apt-secure(8)" in m for m in messages)
    assert any(m.startswith("Err:4") for m in messages)


def test_dpkg_configure_failure_names_the_failing_packages() -> None:
    lines = important_lines(_read("dpkg_configure_errors_composed.txt"))
    assert {line["packageName"] for line in lines if line["packageName"]} == {"nginx-common", "nginx"}
    assert all(line["severity"] == "error" for line in lines)
    assert any(line["message"].startswith("E: Sub-process /usr/bin/dpkg") for line in lines)


@pytest.mark.parametrize("name", ["liberror-perl", "python3-error", "libwarnings-perl"])
def test_package_names_containing_error_or_warning_are_not_flagged(name: str) -> None:
    text = f"The following packages will be upgraded:\n  {name}\nInst {name} [1] (2 Debian:12/stable [all])\n"
    assert important_lines(text) == []


def test_reboot_required_reads_flag_and_deduplicated_package_list() -> None:
    status = reboot_required(FIXTURES / "reboot_required")
    assert status == {"required": True, "packages": ["linux-image-6.1.0-18-amd64", "libc6"]}


def test_no_reboot_flag_means_not_required() -> None:
    assert reboot_required(FIXTURES / "no_reboot_required") == {"required": False, "packages": []}


def test_reboot_flag_under_run_is_found_when_var_run_is_absent(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("*** System restart required ***\n")
    assert reboot_required(tmp_path) == {"required": True, "packages": []}
