"""ML engines and the catalogue of models a request may name."""
