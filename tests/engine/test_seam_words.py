"""Re-decoded stretches lose the words they repeat of their neighbours, and only those."""
from engine.seam_words import trim_seams


def test_leading_words_that_end_the_segment_before_are_cut():
    # seen on LJ Speech: "...may be considered as the" then the retried "as the art of making books"
    assert trim_seams(" as the art of making books.", before=" Printing may be considered as the") == \
        " art of making books."


def test_trailing_words_that_begin_the_segment_after_are_cut_case_and_punctuation_aside():
    assert trim_seams(" and it was natural, Therefore", after=" therefore that the forms") == " and it was natural,"


def test_text_that_only_repeats_its_neighbour_is_dropped():
    assert trim_seams(" As the.", before=" considered as the") == ""


def test_text_without_overlap_is_kept_exactly():
    assert trim_seams(" art of making books", before=" considered as the") == " art of making books"
    assert trim_seams(" Hello.", before="", after="") == " Hello."


def test_at_most_six_words_count_as_a_seam():
    refrain = " la la la la la la la"
    assert trim_seams(refrain, before=refrain) == " la"
