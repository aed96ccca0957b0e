/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The loader's knobs for one object: .rodata, set between open and load,
 * so the verifier sees them as constants. BPF only. */
#ifndef HEPBPF_CONFIG_BPF_H
#define HEPBPF_CONFIG_BPF_H

#include "hepbpf_abi.h"

const volatile struct hep_config hep_cfg = {
	.nwords = 1,
	.slot_stride = 64,
};

#endif /* HEPBPF_CONFIG_BPF_H */
