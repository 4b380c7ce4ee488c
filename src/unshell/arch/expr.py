"""Shape expressions from the catalog ("nh*d", "(nh+2*nkv)*d", "2*I") as linear forms.

Recognition solves for config symbols from tensor shapes. Shapes only ever show products of the
head count and head size, never either alone, so ``nh*d`` and ``nkv*d`` become the composite
symbols ``Q`` and ``K``. After that substitution every expression in the catalog is linear,
which turns solving into reading one unknown off one dimension at a time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

# Products that shapes expose as one number.
COMPOSITES: dict[frozenset[str], str] = {
    frozenset({"nh", "d"}): "Q",
    frozenset({"nkv", "d"}): "K",
}

Monomial = tuple[str, ...]


@dataclass(frozen=True)
class Linear:
    """``constant + sum(coefficient * symbol)`` over base and composite symbols."""

    terms: tuple[tuple[str, int], ...]
    constant: int = 0

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(symbol for symbol, _ in self.terms)

    def evaluate(self, values: dict[str, int]) -> int | None:
        total = self.constant
        for symbol, coefficient in self.terms:
            value = values.get(symbol)
            if value is None:
                return None
            total += coefficient * value
        return total

    def solve_for(self, symbol: str, observed: int, values: dict[str, int]) -> int | None:
        """The value of ``symbol`` that makes this expression equal ``observed``, if integral."""
        rest = self.constant
        coefficient = 0
        for other, c in self.terms:
            if other == symbol:
                coefficient = c
                continue
            value = values.get(other)
            if value is None:
                return None
            rest += c * value
        if coefficient == 0:
            return None
        quotient, remainder = divmod(observed - rest, coefficient)
        return quotient if remainder == 0 and quotient > 0 else None


class ExpressionError(ValueError):
    pass


def _polynomial(node: ast.AST) -> dict[Monomial, int]:
    if isinstance(node, ast.Expression):
        return _polynomial(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return {(): node.value}
    if isinstance(node, ast.Name):
        return {(node.id,): 1}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
        left, right = _polynomial(node.left), _polynomial(node.right)
        result: dict[Monomial, int] = {}
        if isinstance(node.op, ast.Mult):
            for lm, lc in left.items():
                for rm, rc in right.items():
                    key = tuple(sorted(lm + rm))
                    result[key] = result.get(key, 0) + lc * rc
        else:
            sign = 1 if isinstance(node.op, ast.Add) else -1
            result = dict(left)
            for monomial, c in right.items():
                result[monomial] = result.get(monomial, 0) + sign * c
        return {m: c for m, c in result.items() if c}
    raise ExpressionError(f"unsupported shape expression element: {ast.dump(node)}")


@lru_cache(maxsize=4096)
def parse_linear(text: str | int) -> Linear:
    """Parse a catalog shape expression into a `Linear` (raises `ExpressionError`)."""
    if isinstance(text, int):
        return Linear((), text)
    polynomial = _polynomial(ast.parse(str(text), mode="eval"))
    terms: dict[str, int] = {}
    constant = 0
    for monomial, coefficient in polynomial.items():
        if not monomial:
            constant += coefficient
        elif len(monomial) == 1:
            terms[monomial[0]] = terms.get(monomial[0], 0) + coefficient
        elif frozenset(monomial) in COMPOSITES and len(set(monomial)) == 2:
            name = COMPOSITES[frozenset(monomial)]
            terms[name] = terms.get(name, 0) + coefficient
        else:
            raise ExpressionError(f"{text!r} is not linear in the shape symbols")
    return Linear(tuple(sorted(terms.items())), constant)


def evaluate_config_expression(text: str, values: dict[str, int]) -> int | None:
    """Evaluate a config default such as ``H//nh`` (integer arithmetic, no names beyond values)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    result = _evaluate(tree.body, values)
    if isinstance(result, bool):
        return int(result)
    return result


def _evaluate(node: ast.AST, values: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | bool):
        return int(node.value)
    if isinstance(node, ast.Name):
        if node.id in ("True", "False"):
            return int(node.id == "True")
        return values.get(node.id)
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.FloorDiv | ast.Div) and right:
            return left // right
    return None
