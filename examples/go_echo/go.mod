module resty_ffi/examples/go_echo

go 1.19
