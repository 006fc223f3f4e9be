"""Helpers shared by the tests: real servers started the way users start them."""
