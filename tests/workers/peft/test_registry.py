"""Every described method has one injector, run in the documented order."""

from autopeft_service.domain.methods import METHODS
from workers.peft.registry import injectors


def test_every_method_has_an_injector_in_build_order() -> None:
    built = injectors()
    assert sorted(i.field for i in built) == sorted(m.field for m in METHODS)
    order = [i.field for i in built]
    assert order[0] == "bitfit" and order[-1] == "prefix"  # biases first, attention last
