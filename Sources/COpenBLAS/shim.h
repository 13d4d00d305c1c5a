// OpenBLAS's CBLAS header as installed by Debian's libopenblas-dev.
#include <cblas.h>
// Thread control exported by OpenBLAS (not part of CBLAS proper).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
