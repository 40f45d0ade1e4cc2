"""Class-incremental streams over real digits: sizes, class order, determinism, errors."""

import pytest

from cil.data import load_dataset
from cil.errors import UserError
from cil.streams import build_stream, resolve_class_order, split_sizes


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_natural_split(digits):
    s = build_stream(digits, n_experiences=5)
    assert s.class_order == list(range(10))
    assert s.classes_per_experience == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for i, exp in enumerate(s.benchmark.train_stream):
        assert sorted(exp.classes_in_this_experience) == s.classes_per_experience[i]
        x, y, *_ = exp.dataset[0]
        assert x.shape == (1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    total = sum(len(e.dataset) for e in s.benchmark.train_stream)
    assert total == len(digits.y_train)


def test_shuffled_order_depends_only_on_class_order_seed(digits):
    a = build_stream(digits, n_experiences=5, class_order="shuffled", class_order_seed=3)
    b = build_stream(digits, n_experiences=5, class_order="shuffled", class_order_seed=3)
    c = build_stream(digits, n_experiences=5, class_order="shuffled", class_order_seed=4)
    assert a.class_order == b.class_order and sorted(a.class_order) == list(range(10))
    assert a.class_order != c.class_order
    assert a.classes_per_experience[0] == a.class_order[:2]
    assert sorted(a.benchmark.train_stream[0].classes_in_this_experience) == sorted(a.class_order[:2])


def test_first_experience_size_and_classes_per_exp(digits):
    s = build_stream(digits, first_exp_classes=4, classes_per_exp=2)
    assert [len(c) for c in s.classes_per_experience] == [4, 2, 2, 2]
    assert sorted(s.benchmark.train_stream[0].classes_in_this_experience) == [0, 1, 2, 3]
    assert split_sizes(10, n_experiences=4, classes_per_exp=None, first_exp_classes=4) == [4, 2, 2, 2]


def test_explicit_order(digits):
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    s = build_stream(digits, n_experiences=2, class_order=order)
    assert s.classes_per_experience == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_experiences=11), "impossible with 10 classes"),
    (dict(n_experiences=3), "does not divide"),
    (dict(n_experiences=5, class_order=[0, 1, 2]), "every class id"),
    (dict(n_experiences=5, class_order="random"), "natural"),
    (dict(classes_per_exp=3), "does not divide"),
])
def test_bad_splits_are_user_errors(digits, kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        build_stream(digits, **kwargs)


def test_resolve_class_order_seeded():
    assert resolve_class_order(5, "shuffled", 1) == resolve_class_order(5, "shuffled", 1)
