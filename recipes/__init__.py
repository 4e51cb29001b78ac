"""Recipes on top of the application: the demo and the shipped teacher's pretraining."""
