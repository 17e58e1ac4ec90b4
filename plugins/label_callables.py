"""Built-in labeling functions on the allow-list (``{type: callable, callable: NAME}``).

A recipe may name these and nothing else: registering a function is what a plugin does in its
own code (``framework.labels.labeling_function``), never what a recipe does. Imported by the
``weak_supervision`` labeler, so they are registered whenever it is.
"""
from __future__ import annotations

from framework.labels import labeling_function

#: car makes of vega_datasets' cars table and where they come from
CAR_MAKES = {
    "amc": "USA", "buick": "USA", "cadillac": "USA", "chevrolet": "USA", "chevy": "USA", "chrysler": "USA",
    "dodge": "USA", "ford": "USA", "mercury": "USA", "oldsmobile": "USA", "plymouth": "USA", "pontiac": "USA",
    "datsun": "Japan", "honda": "Japan", "mazda": "Japan", "nissan": "Japan", "subaru": "Japan", "toyota": "Japan",
    "audi": "Europe", "bmw": "Europe", "citroen": "Europe", "fiat": "Europe", "mercedes": "Europe",
    "mercedes-benz": "Europe", "opel": "Europe", "peugeot": "Europe", "renault": "Europe", "saab": "Europe",
    "triumph": "Europe", "volkswagen": "Europe", "volvo": "Europe", "vw": "Europe",
}


@labeling_function("car_make_typos")
def car_make_typos(frame):
    """The origin of a car whose make is misspelt ("toyouta", "chevroelt", "maxda"): the first word
    of ``Name`` is no known make but one edit away from exactly one. Abstains otherwise (exact
    makes are for keyword rules)."""
    import difflib

    def origin(name):
        if not isinstance(name, str) or not name.strip():
            return None
        make = name.split()[0].lower()
        if make in CAR_MAKES:
            return None
        close = difflib.get_close_matches(make, list(CAR_MAKES), n=2, cutoff=0.8)
        return CAR_MAKES[close[0]] if len(close) == 1 else None

    return frame["Name"].map(origin)
