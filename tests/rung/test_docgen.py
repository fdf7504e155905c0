"""docs/reference.md is generated from the code and must be current."""

from rung.docgen import main


def test_reference_is_up_to_date():
    assert main(["--check"]) == 0, "run: python -m rung.docgen"
