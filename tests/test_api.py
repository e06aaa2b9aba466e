"""The public namespace: what `import fastcheck` offers."""

import fastcheck


def test_every_public_name_resolves_to_its_module():
    assert set(fastcheck.__all__) == set(fastcheck._WHERE) | {"__version__"}
    for name in fastcheck.__all__:
        value = getattr(fastcheck, name)
        if name != "__version__":
            assert value.__module__.startswith("fastcheck."), name


def test_unknown_name_is_an_attribute_error_naming_it():
    try:
        fastcheck.no_such_function  # noqa: B018
    except AttributeError as exc:
        assert "no_such_function" in str(exc)
    else:
        raise AssertionError("fastcheck.no_such_function did not raise")

