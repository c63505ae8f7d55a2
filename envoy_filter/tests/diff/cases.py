"""Every differential case, in the order the suite runs them."""

from diff import cases_calls, cases_handle, cases_routes, cases_stream

CASES = cases_handle.CASES + cases_stream.CASES + cases_calls.CASES + cases_routes.CASES
