module my_runtime

go 1.19
