/* libFuzzer target: pictures (src/io/picture.c: PNG through libpng, JPEG through libjpeg-turbo,
 * the EXIF orientation of a JPEG's APP1 applied) and their preparation (src/data/prepare.c:
 * compositing, the border median, the ink box, resampling to 20 pixels, placing by the centre
 * of mass). dg_picture_load takes a path (the input goes to a memfd); the EXIF TIFF reader is
 * also given the raw input (seeds starting "II*\0" / "MM\0*" aim at it), and a decoded picture
 * is turned once more by an orientation taken from the input's last byte and prepared again. */
#include "fuzz_common.h"

#include "digits/picture.h"

static void check_prepare(const struct dg_picture *pic)
{
    uint8_t image[DG_PIXELS];
    struct dg_prepare_info info;
    enum dg_status status = dg_picture_prepare(pic, image, &info);
    if (status == DG_OK &&
        (info.box_width == 0 || info.box_height == 0 || info.box_x + info.box_width > pic->width ||
         info.box_y + info.box_height > pic->height || info.scaled_width > DG_PREPARE_BOX ||
         info.scaled_height > DG_PREPARE_BOX))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int o = dg_picture_exif_orientation(data, size);
    if (o < 1 || o > 8)
        abort();
    (void)dg_picture_kind_name(dg_picture_sniff(data, size));
    const char *path = fuzz_file(0, data, size);
    struct dg_picture pic;
    if (dg_picture_load(path, &pic) != DG_OK) {
        if (pic.pixels)
            abort(); /* left empty on failure */
        return 0;
    }
    if (!pic.pixels || pic.width == 0 || pic.height == 0 ||
        (pic.channels != 1 && pic.channels != 2) || pic.orientation < 1 || pic.orientation > 8)
        abort();
    check_prepare(&pic);
    if (size && dg_picture_orient(&pic, 1 + data[size - 1] % 8) == DG_OK)
        check_prepare(&pic);
    dg_picture_free(&pic);
    return 0;
}
