module resty_ffi/bench/go_echo

go 1.19
