/* A shared library that is not a runtime: it lacks libffi_init. */

int
not_a_runtime(void)
{
    return 0;
}
