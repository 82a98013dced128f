"""worker/lists.py: take() is list.pop() for a queue or a stack, whatever its length."""

import pytest

from worker.lists import take


@pytest.mark.parametrize("length", [1, 2, 5])
def test_taking_from_the_front_keeps_the_order(length):
    items = list(range(length))
    taken = [take(items, 0) for _ in range(length)]
    assert taken == list(range(length))
    assert items == []
    items.append("again")             # an emptied list takes items as a new one does
    assert take(items, 0) == "again" and items == []


@pytest.mark.parametrize("length", [1, 2, 5])
def test_taking_from_the_back_is_a_stack(length):
    items = list(range(length))
    assert [take(items, -1) for _ in range(length)] == list(reversed(range(length)))
    assert items == []


def test_an_empty_list_raises_as_pop_does():
    with pytest.raises(IndexError):
        take([], 0)
